"""Ctrl-C (SIGINT) and SIGTERM at any moment of a command: one line, exit 128 + the signal's number.

    if __name__ == "__main__":       # the first lines of a command's module, before its slow imports
        from pgpong import interrupt
        interrupt.guard()

From `guard()` until the command's main() runs (its imports, Hydra's own start) there is nothing
to save: a signal prints `pgpong: stopped by SIGINT during start-up` and exits (SystemExit, so
`finally` blocks still run; a second signal exits at once). Inside main(), `stopping()` (entered by
errors.entry_point) turns a signal into `Stop`, a KeyboardInterrupt naming it, so code that cleans
up on Ctrl-C does (Optuna fails the trial, an MLflow run ends KILLED), and the entry point prints
one line. Training replaces both with pgpong.run's StopFlag, which writes a checkpoint first.
A signal that arrives while C code holds the interpreter (ale-py building its emulators) is
answered as soon as that call returns.
"""
import contextlib
import os
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(KeyboardInterrupt):
    """SIGINT or SIGTERM asked the command to stop."""

    def __init__(self, signum: int):
        self.signum, self.name = signum, signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")


def exit_code(signum: int) -> int:
    return 128 + signum


def say_stopped(e: Stop) -> int:
    """Print `pgpong: stopped by <signal>` on stderr; return the exit code (130 for SIGINT)."""
    print(f"pgpong: {e}", file=sys.stderr, flush=True)
    return exit_code(e.signum)


def _quit_now(signum, frame) -> None:
    print(f"pgpong: {signal.Signals(signum).name} again: quitting at once", file=sys.stderr, flush=True)
    os._exit(exit_code(signum))


def _quit(signum, frame) -> None:
    for sig in SIGNALS:      # cleanup that hangs (a thread that never ends) is cut short by a second signal
        signal.signal(sig, _quit_now)
    print(f"pgpong: stopped by {signal.Signals(signum).name} during start-up", file=sys.stderr, flush=True)
    raise SystemExit(exit_code(signum))


def guard() -> None:
    """Until main() runs: a signal is one line and an exit, not a traceback from whatever was loading."""
    for sig in SIGNALS:
        signal.signal(sig, _quit)


def _raise_stop(signum, frame) -> None:
    raise Stop(signum)


@contextlib.contextmanager
def stopping():
    """Inside: SIGINT and SIGTERM raise Stop (in the main thread; elsewhere signals are not ours to set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise_stop) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
