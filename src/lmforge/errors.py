"""Errors that reach the user: each names where the bad input is."""


class InputError(ValueError):
    """Malformed user input; the message names the file, line and field."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        where = f"{path}:{line}: " if path is not None and line is not None else (
            f"{path}: " if path is not None else "")
        super().__init__(where + message)
        self.path, self.line = path, line
