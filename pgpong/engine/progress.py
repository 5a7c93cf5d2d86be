"""Progress: a live one-line display on a terminal, plain periodic lines otherwise."""
import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class Progress:
    def __init__(self, total_episodes: int, every_s: float = 30.0, stream=None):
        self.total = total_episodes
        self.every_s = every_s
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = float("-inf")   # the first update always shows

    def line(self, episode: int, running: float, steps_per_s: float, elapsed_s: float) -> str:
        eta = elapsed_s / max(episode, 1) * (self.total - episode)
        return (f"episode {episode}/{self.total}  running reward {running:+.2f}  "
                f"{steps_per_s:,.0f} steps/s  ETA {_duration(eta)}")

    def update(self, episode: int, running: float, steps_per_s: float, elapsed_s: float) -> None:
        now = time.monotonic()
        if self.live:
            if now - self._last >= 0.2 or episode == self.total:
                self.stream.write("\r" + self.line(episode, running, steps_per_s, elapsed_s) + "\033[K")
                self.stream.flush()
                self._last = now
        elif now - self._last >= self.every_s or episode == self.total:
            self.stream.write(self.line(episode, running, steps_per_s, elapsed_s) + "\n")
            self.stream.flush()
            self._last = now

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()
