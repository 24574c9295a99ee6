"""The one exception type for user mistakes.

Anything a user can fix (a bad path, a corrupt image, a wrong shape, missing weights offline) raises
:class:`ToolkitError` with a single line that names the file or field and the fix. The CLI prints it
as ``error: ...`` and exits non-zero, with no traceback.
"""


class ToolkitError(Exception):
    """A user-facing error: its message is one line that says what is wrong and how to fix it."""


class ImageError(ToolkitError):
    """An image that cannot be decoded, or that breaks a size limit."""
