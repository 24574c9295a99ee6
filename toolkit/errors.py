"""The one exception type for user mistakes.

Anything a user can fix (a bad path, a corrupt image, a wrong shape, missing weights offline) raises
:class:`ToolkitError` with a single line that names the file or field and the fix. The CLI prints it
as ``error: ...`` and exits non-zero, with no traceback.
"""

import errno
import re


class ToolkitError(Exception):
    """A user-facing error: its message is one line that says what is wrong and how to fix it."""


class ImageError(ToolkitError):
    """An image that cannot be decoded, or that breaks a size limit."""


# errno -> what the user reads; EFBIG also comes from a file-size limit (ulimit -f).
_DISK_FULL = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the disk or a size limit",
}
_DISK_FULL_TEXT = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
                   "File too large": errno.EFBIG}


def disk_full_error(exc: BaseException, where: str | None = None, hint: str | None = None) -> ToolkitError | None:
    """A one-line :class:`ToolkitError` for a write that failed on a full disk; None for any other error.

    Recognises OSError's errno (ENOSPC, EDQUOT, EFBIG) and the same conditions inside the messages of
    libraries that wrap them (TensorFlow's checkpoint writer, which keeps the resume state; h5py), anywhere in
    the exception chain.

    Args:
        exc: the exception a write raised.
        where: the folder to name (default: the one in the error, up to its first temporary part).
        hint: what to do (default: free space and run the command again).
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        code, path = None, None
        if isinstance(e, OSError) and e.errno in _DISK_FULL:
            code, path = e.errno, e.filename
        else:
            text = str(e)
            code = next((c for t, c in _DISK_FULL_TEXT.items() if t in text), None)
            if code is not None:
                path = next((p for p in re.findall(r"(/[^\s;'\"]+)", text) if ":" not in p), None)
        if code is not None:
            place = where or (_meaningful_folder(str(path)) if path else "disk")
            return ToolkitError(f"{place}: {_DISK_FULL[code]}; " + (hint or "free some space or write elsewhere, "
                                "then run the command again (an interrupted training run continues with --resume)"))
        e = e.__cause__ or e.__context__
    return None


def _meaningful_folder(path: str) -> str:
    """The folder a user recognises: the path up to its first temporary component (``.x``, ``*_temp``)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if i and (part.startswith(".") or "_temp" in part or part.endswith(".tmp") or "tempstate" in part):
            return "/".join(parts[:i]) or "/"
    return path


def printable(value) -> str:
    """A path or name as one printable line: newlines, other control characters and bytes that are not
    UTF-8 (file systems allow all of them in names) escaped, so a message stays one line."""
    import os

    text = os.fsencode(value).decode("utf-8", "backslashreplace") if isinstance(value, (str, os.PathLike)) else str(
        value)
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
