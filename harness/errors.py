"""The one error type that means "the user's input is wrong" (exit code 2)."""


class UserError(Exception):
    """Bad input: printed as one line naming the file/key/value and what was expected; exit 2."""
