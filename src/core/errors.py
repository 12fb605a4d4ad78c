"""The one exception type the scripts turn into a one-line message."""


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit code 2, no traceback."""
