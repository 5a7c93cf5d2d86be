"""The one exception type users see as a plain message instead of a traceback."""


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
