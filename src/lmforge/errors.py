"""Errors that reach the user: each names where the bad input is."""

import contextlib
import gzip
import zlib


class InputError(ValueError):
    """Malformed user input; the message names the file, line and field."""

    def __init__(self, message: str, path: object = None, line: int | None = None):
        where = f"{path}:{line}: " if path is not None and line is not None else (
            f"{path}: " if path is not None else "")
        super().__init__(where + message)
        self.path, self.line = path, line


@contextlib.contextmanager
def reading(path: object):
    """Around reading a file: a damaged gzip stream (cut short, corrupt, not gzip at all)
    raises one InputError naming the file, not the decompressor's own exception."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"damaged gzip data ({e})", path) from None
    except UnicodeDecodeError as e:
        raise InputError(f"invalid UTF-8 ({e.reason} at byte {e.start})", path) from None
