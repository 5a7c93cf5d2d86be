"""The one exception type users see as a plain message instead of a traceback."""


class PgpongError(Exception):
    """A problem the user can fix: bad config, missing file, unreachable server."""
