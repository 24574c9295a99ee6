"""The door's core: settings, the k-of-n policy, the model holder, the event log and systemd's notify socket.

It needs only the base install (numpy, onnxruntime, Pillow): none of the ``door`` extras.
"""
