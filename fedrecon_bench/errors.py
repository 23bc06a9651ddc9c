"""User-facing errors: one line that names the file/key and the fix."""


class UserError(Exception):
    """Bad input detected before training. The CLI prints it as one line, exit 2."""
