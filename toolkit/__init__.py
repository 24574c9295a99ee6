"""Transfer learning and edge deployment for small image classifiers.

Importing ``toolkit`` never imports TensorFlow: the door runtime must start on a Raspberry Pi
that only has numpy, onnxruntime and pillow.
"""

__version__ = "0.1.0"
