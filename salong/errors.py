"""The one exception type the command line turns into a one-line message."""


class SalongError(Exception):
    """A user-facing failure.

    The message is a single line that names the bad value and says how to fix it;
    the CLI prints it without a traceback and exits non-zero.
    """
