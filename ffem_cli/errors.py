"""The one exception type commands raise for bad input.

``FfemError`` carries a single line meant for the user. The CLI prints it as
``error: <message>`` and exits with ``exit_code`` (1 by default: the run
cannot go on). Raise it for anything the user can fix (a missing file, a
malformed list, a refused option); let genuine bugs raise their own types.
``op_error_lines`` and ``tidy_op_line`` pick the telling sentence out of a
TensorFlow op error for such a line.
"""

import re


class FfemError(Exception):
    """A user-facing error: one clear line, non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def op_error_lines(message: str) -> list[str]:
    """The lines of a TensorFlow op error's message that say something: not blank, not indented
    (the graph trace), not "Graph execution error:" or "Detected at node …"."""
    lines = [line for line in message.splitlines() if line.strip() and not line[0].isspace()]
    return [line for line in lines if not line.startswith(("Graph execution error", "Detected at node"))]


def tidy_op_line(line: str) -> str:
    """``line`` without a leading ``{{function_node …}}`` and a trailing ``[Op:…]``."""
    return re.sub(r"^\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\]$", "", line).strip()
