"""The one exception type the CLI turns into a one-line message and a non-zero exit, and the
one rule for turning any other error into a line."""


class AdvisorError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def one_line(error: BaseException, limit: int = 500) -> str:
    """A one-line summary of an error: its first non-empty line that is not a heading ("Compilation
    error:"), or for a text that carries a traceback the last one, where the message is."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if any(line.startswith("Traceback") for line in lines):
        return lines[-1][:limit]
    line = next((line for line in lines if not line.endswith(":")), lines[0])
    return line[:limit]
