"""Frame sources (OpenCV, picamera2, a folder of images) and the optional face crop (Haar, BlazeFace).

Every source returns RGB uint8 arrays (OpenCV's BGR is converted here, once), ``None`` at the end of a
finite stream (a video file, a folder), and raises :class:`CameraError` when the camera is lost, so
the door loop can lock and reconnect. cv2 and picamera2 are imported only by the sources that use them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from toolkit.errors import ImageError, ToolkitError
from toolkit.images import decode_image, is_image_file
from toolkit.runtime.extras import door_extra

log = logging.getLogger("toolkit.runtime")


class CameraError(Exception):
    """The camera failed or disappeared; the loop locks the door and reconnects with backoff."""


class FrameSource:
    """A camera. ``open`` may be called again after a failure to reconnect."""

    # A live sensor never delivers the same frame twice (noise alone changes it): a repeat means a
    # frozen driver or buffer, and the door does not count it as a new look. Recorded sources repeat.
    live = False

    def open(self) -> None:
        """Connect; raises CameraError when the device is not there."""

    def read(self) -> np.ndarray | None:
        """The next RGB frame, or None when a finite source has ended."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the device."""


class FolderSource(FrameSource):
    """Images of a folder in name order: dry runs, tests and replaying a recorded day.

    Args:
        folder: a directory of .jpg/.png/... files.
        loop: start again at the end instead of ending the stream.
    """

    def __init__(self, folder: str | Path, loop: bool = False) -> None:
        self.folder = Path(folder)
        self.loop = loop
        self.files = self._scan()
        if not self.files:
            raise ToolkitError(f"{self.folder}: no images (.jpg, .png, ...) to use as camera frames")
        self._next = 0
        self._skipped: set[Path] = set()

    def _scan(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.iterdir() if p.is_file() and is_image_file(p))
        except OSError:
            return []

    def open(self) -> None:
        """Look at the folder again (the door calls this after a pause that doubles while it stays empty)."""
        self.files, self._next = self._scan(), 0
        if not self.files:
            raise CameraError(f"{self.folder}: no images left in the folder")

    def read(self) -> np.ndarray | None:
        tried = 0
        while True:
            if self._next >= len(self.files):
                if not self.loop:
                    return None
                self._next = 0
            if tried >= len(self.files):
                # A whole pass without one readable image (the folder was emptied): a lost camera, so the door
                # locks and retries with its backoff instead of spinning on warnings.
                raise CameraError(f"{self.folder}: none of its {len(self.files)} images can be read any more")
            path = self.files[self._next]
            self._next += 1
            tried += 1
            try:
                return decode_image(path)
            except ImageError as exc:  # one bad photo in a dry-run folder should not stop the run
                if path not in self._skipped:  # said once per file, not once per pass
                    self._skipped.add(path)
                    log.warning("skipping frame: %s", exc)


class OpenCVSource(FrameSource):
    """OpenCV ``VideoCapture``: a device index, an RTSP/HTTP URL or a video file."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.is_file = not spec.isdigit() and "://" not in spec
        # A sensor (device index) never repeats a frame; a decoded RTSP/HTTP stream of a still scene can,
        # and a stalled stream blocks or fails in read() instead.
        self.live = spec.isdigit()
        self.cap = None
        with door_extra(f"--camera {spec}"):  # now, not at the first open(): one line before the door starts
            import cv2  # noqa: F401

    def open(self) -> None:
        import cv2

        self.close()
        self.cap = cv2.VideoCapture(int(self.spec) if self.spec.isdigit() else self.spec)
        if not self.cap.isOpened():
            raise CameraError(f"cannot open camera {self.spec!r}")

    def read(self) -> np.ndarray | None:
        import cv2

        if self.cap is None:
            raise CameraError(f"camera {self.spec!r} is not open")
        ok, frame = self.cap.read()
        if not ok or frame is None:
            if self.is_file:
                return None  # end of the video
            raise CameraError(f"camera {self.spec!r} stopped sending frames")
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class Picamera2Source(FrameSource):
    """The Raspberry Pi camera through picamera2 (installed with the OS, not from PyPI)."""

    live = True

    def __init__(self, size: tuple[int, int] = (480, 640)) -> None:
        self.size = size
        self.cam = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise ToolkitError("--camera picamera2 needs picamera2: sudo apt install python3-picamera2") from exc
        self.close()
        try:
            self.cam = Picamera2()
            h, w = self.size
            self.cam.configure(self.cam.create_preview_configuration(main={"size": (w, h), "format": "RGB888"}))
            self.cam.start()
        except Exception as exc:  # libcamera errors have no common base class
            raise CameraError(f"cannot start picamera2 ({exc})") from exc

    def read(self) -> np.ndarray | None:
        if self.cam is None:
            raise CameraError("picamera2 is not started")
        try:
            frame = self.cam.capture_array()
        except Exception as exc:
            raise CameraError(f"picamera2 capture failed ({exc})") from exc
        return np.ascontiguousarray(frame[:, :, 2::-1])  # libcamera's "RGB888" is BGR in memory

    def close(self) -> None:
        if self.cam is not None:
            try:
                self.cam.close()
            finally:
                self.cam = None


def open_source(spec: str, loop: bool = False) -> FrameSource:
    """The frame source named by ``--camera``: 'picamera2', a folder, a device index, a URL or a file.

    Raises:
        ToolkitError: a path that does not exist.
    """
    if spec == "picamera2":
        return Picamera2Source()
    path = Path(spec)
    if path.is_dir():
        return FolderSource(path, loop=loop)
    if not spec.isdigit() and "://" not in spec and not path.exists():
        raise ToolkitError(
            f"--camera {spec!r}: no such file or folder; use a device index (0), a URL, a video or a folder"
        )
    return OpenCVSource(spec)


class HaarFaceCropper:
    """OpenCV's bundled frontal-face Haar cascade: crop the largest face, or None when there is none.

    Args:
        margin: fraction of the face box added on each side (the model was trained on loose crops).
        min_size: smallest face in pixels; smaller detections are noise at door distance.
    """

    name = "haar"

    def __init__(self, margin: float = 0.2, min_size: int = 40) -> None:
        with door_extra("--detector haar"):
            import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise ToolkitError(
                f"--detector haar needs OpenCV 4's bundled Haar cascades (OpenCV {cv2.__version__} has none): "
                "pip install 'opencv-python-headless<5'"
            )
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ToolkitError(f"{path}: cannot load OpenCV's Haar cascade; reinstall opencv-python-headless")
        self.margin, self.min_size = margin, min_size

    def box(self, rgb: np.ndarray) -> tuple[int, int, int, int] | None:
        """The largest face as (x, y, w, h), or None."""
        import cv2

        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        faces = self.cascade.detectMultiScale(gray, 1.1, 5, minSize=(self.min_size, self.min_size))
        if len(faces) == 0:
            return None
        return tuple(int(v) for v in max(faces, key=lambda f: f[2] * f[3]))

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        found = self.box(rgb)
        if found is None:
            return None
        x, y, w, h = found
        dx, dy = int(w * self.margin), int(h * self.margin)
        y0, y1 = max(0, y - dy), min(rgb.shape[0], y + h + dy)
        x0, x1 = max(0, x - dx), min(rgb.shape[1], x + w + dx)
        return rgb[y0:y1, x0:x1]


def make_cropper(kind: str | None, model: str | Path | None = None, threads: int = 1):
    """The face crop named by ``--detector``: 'none', 'haar' or 'blazeface'; None = the export's own.

    Args:
        kind: the detector; None takes the one recorded in ``model``'s manifest (the crop its model was
            trained on), else no crop.
        model: the export folder the door runs, whose manifest may carry a detector file.
        threads: onnxruntime threads of the BlazeFace detector.

    Raises:
        ToolkitError: an unknown kind; blazeface with no detector file in the export nor in the cache.
    """
    if kind is None:
        from toolkit.inference.detector_files import manifest_detector

        kind = "blazeface" if model is not None and manifest_detector(model) else "none"
    if kind == "none":
        return None
    if kind == "haar":
        return HaarFaceCropper()
    if kind == "blazeface":
        from toolkit.inference.detector_files import load_detector

        return load_detector(model, threads=threads)
    raise ToolkitError(f"--detector {kind!r}: choose 'none', 'haar' or 'blazeface'")
