"""The one exception type users see as a plain message instead of a traceback, and how commands exit on it."""
import functools
import os
import sqlite3
import sys

from pgpong import interrupt


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


def fault(e: BaseException) -> str | None:
    """One line for a fault of the machine rather than of the code, else None (a bug keeps its traceback).

    Faults: a file or folder that cannot be written or read (permissions, read-only or full file
    system), a database file SQLite refuses; found anywhere in the exception's chain of causes.
    """
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sqlite3.Error):
            return f"database: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        if isinstance(e, OSError) and e.errno is not None and e.strerror:
            names = [os.path.abspath(f) if isinstance(f, str) else str(f) for f in (e.filename, e.filename2)
                     if f is not None]
            return f"{' -> '.join(names)}: {e.strerror}" if names else e.strerror
        e = getattr(e, "orig", None) or e.__cause__    # SQLAlchemy keeps the driver's error in .orig
    return None


def entry_point(main):
    """The wrapper of every entry point's main(argv) -> exit code: a PgpongError or a fault of the
    machine becomes one line, exit 2; SIGINT/SIGTERM one line, exit 128 + signal."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            with interrupt.stopping():
                return main(*args, **kwargs)
        except PgpongError as e:
            return say_error(e)
        except interrupt.Stop as e:
            return interrupt.say_stopped(e)
        except Exception as e:
            line = fault(e)
            if line is None:
                raise
            return say_error(line)
    return wrapped
