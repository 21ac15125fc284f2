"""The one exception type that reaches the user as a one-line message."""


class AlzmriError(Exception):
    """A problem with the user's input or request.

    The CLI prints ``error: <message>`` on one line and exits non-zero; nothing else
    is shown. Raise it with a message that names the offending file, row or option.
    """


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, or its type name: for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same clean-up as for Ctrl-C runs (workers stopped)."""
