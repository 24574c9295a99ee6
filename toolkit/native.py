"""Native libraries' own console lines, kept out of the user's output.

TensorFlow's start-up (oneDNN, CUDA probing), the TFLite quantizer's per-call settings dump and LiteRT's "INFO:
Created TensorFlow Lite XNNPACK delegate for CPU." are written by C++ straight to file descriptor 2, whatever
``TF_CPP_MIN_LOG_LEVEL`` or Python's logging say. TensorFlow-free, so the door's runtime can use it too.
"""

from __future__ import annotations

import contextlib
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Writes to file descriptor 2 go nowhere for the block (Python exceptions are raised after it is restored).

    Every thread's stderr is affected while the block runs: keep it around a model load, not a server's work.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
