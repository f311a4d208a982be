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
