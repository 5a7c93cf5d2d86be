"""The one exception type users see as a plain message instead of a traceback, and how commands exit on it."""
import functools
import sys


class PgpongError(Exception):
    """A problem the user can fix: bad config, missing file, unreachable server."""


class Diverged(PgpongError):
    """NaN or inf in weights, gradients or probabilities: training stopped, last good checkpoint kept.

    A sweep driver catches this to mark the trial failed and go on with the study.
    """


class Interrupted(Exception):
    """SIGINT/SIGTERM asked training to stop; a checkpoint was written after the current step."""

    def __init__(self, signame: str, episode: int, checkpoint: str | None):
        super().__init__(f"stopped by {signame} at episode {episode}")
        self.signame, self.episode, self.checkpoint = signame, episode, checkpoint


USER_ERROR = 2   # the exit code of a command stopped by a PgpongError


def say_error(e: BaseException | str) -> int:
    """Print `error: <message>` on stderr as one line (a line break the user typed shows as \\n);
    return the exit code of a user's mistake."""
    print("error: " + str(e).replace("\r", "\\r").replace("\n", "\\n"), file=sys.stderr, flush=True)
    return USER_ERROR


def entry_point(main):
    """The wrapper of every entry point's main(argv) -> exit code: a PgpongError becomes one line, exit 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except PgpongError as e:
            return say_error(e)
    return wrapped
