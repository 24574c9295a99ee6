"""One line naming the ``door`` extra when a base install (numpy, onnxruntime, Pillow) lacks one of its packages.

``pip install door-camera-toolkit`` is enough for the Predictor; the HTTP API, OpenCV cameras, the Haar face crop
and the GPIO relay need ``pip install 'door-camera-toolkit[door]'``. Without it, their imports would end a door
command with a traceback; :func:`door_extra` turns the missing module into a :class:`ToolkitError`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from toolkit.errors import ToolkitError

INSTALL = "pip install 'door-camera-toolkit[door]'"
# Top-level modules the door extra brings (with what they pull in themselves): only these are its to name.
DOOR_MODULES = frozenset({
    "fastapi", "starlette", "anyio", "uvicorn", "httptools", "uvloop", "multipart", "python_multipart",
    "prometheus_client", "cv2", "gpiozero", "pydantic", "pydantic_core", "paho",
})  # fmt: skip


@contextlib.contextmanager
def door_extra(purpose: str) -> Iterator[None]:
    """Imports inside the block that miss a door-extra package raise one line naming it and the extra.

    Args:
        purpose: what needs the package, e.g. "the HTTP API" or "--camera 0".

    Raises:
        ToolkitError: "PURPOSE needs the door extra (MODULE is not installed): pip install 'door-camera-toolkit[door]'".
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in DOOR_MODULES:  # anything else is a broken install or a bug: keep its traceback
            raise
        raise ToolkitError(f"{purpose} needs the door extra ({missing} is not installed): {INSTALL}") from None
