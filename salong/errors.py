"""The one exception type the command line turns into a one-line message."""


class SalongError(Exception):
    """A user-facing failure.

    The message is a single line that names the bad value and says how to fix it;
    the CLI prints it without a traceback and exits non-zero.
    """


def short_reason(exc: BaseException) -> str:
    """The first line of a library's exception, shortened, to quote inside a SalongError message."""
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__


class Note(UserWarning):
    """Something worth knowing that is not a problem (a choice made for the user, and how to
    make another); the CLI prints it as one "note: ..." line."""
