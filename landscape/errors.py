"""One exception type for bad user input: the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    """Something the user asked for cannot work; the message says what and what to do."""


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message, or its type name when the message is empty (never IndexError)."""
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:limit]
