"""The TensorFlow-free door runtime: numpy, onnxruntime and Pillow only (opencv, gpiozero and
fastapi/uvicorn come with the ``door`` extra and are imported only where used)."""
