"""The one exception type commands raise for bad input.

``FfemError`` carries a single line meant for the user. The CLI prints it as
``error: <message>`` and exits with ``exit_code`` (1 by default: the run
cannot go on). Raise it for anything the user can fix (a missing file, a
malformed list, a refused option); let genuine bugs raise their own types.
"""


class FfemError(Exception):
    """A user-facing error: one clear line, non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
