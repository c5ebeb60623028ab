"""One exception type for bad user input: the CLI prints its message as one line and exits 2."""


class UserError(Exception):
    """Something the user asked for cannot work; the message says what and what to do."""
