"""Errors that mean "the user gave us something we cannot use".

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class MedMLLMError(Exception):
    """A user-facing error: the message is one line saying what, where, and what to do."""


class ScanError(MedMLLMError):
    """A scan could not be read or prepared. The message names the file and the problem."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def first_line(error: BaseException, limit: int = 200, default: str | None = None) -> str:
    """The first line of an exception's message, cut to ``limit`` characters, for a one-line
    user error; an empty message gives ``default`` (the exception's type name if None)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if default is None else default
    line = text.splitlines()[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."
