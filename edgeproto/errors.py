"""The one exception type for user mistakes: the CLI prints its message and exits non-zero."""


class EdgeprotoError(Exception):
    """A problem with the user's input (recipe, data, checkpoint, path), reported without a traceback."""
