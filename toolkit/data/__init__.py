"""Data for training: image folders, course .h5 files and built-in synthetic sets.

``load_data(spec)`` returns a :class:`Dataset`; ``Dataset.split()`` gives stratified, fingerprinted
train/val/test :class:`Split` objects that hand out numpy arrays or unbatched ``tf.data`` datasets.
Importing this package never imports TensorFlow.
"""

from toolkit.data.dataset import SYNTHETIC_TASKS, Dataset, load_data
from toolkit.data.report import DataReport
from toolkit.data.split import Split, Splits

__all__ = ["SYNTHETIC_TASKS", "DataReport", "Dataset", "Split", "Splits", "load_data"]
