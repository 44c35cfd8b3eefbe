"""The one error type that means "the user's input is wrong" (exit code 2)."""


class UserError(Exception):
    """Bad input: printed as one line naming the file/key/value and what was expected; exit 2."""


def expect(cond: bool, where: str, key: str, value, expected: str) -> None:
    """The one shape of a bad-input message: `<file>: key '<key>' = <value>: expected <what>`."""
    if not cond:
        raise UserError(f"{where}: key '{key}' = {value!r}: expected {expected}")
