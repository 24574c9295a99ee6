"""Match a data source's class names to a model's: equal, or unnamed integer classes matched by index.

A course ``.h5`` file often names its classes ``0, 1`` (its ``list_classes``, or no names at all) while
the model trained on photo folders calls them ``no_smile, smile``. Evaluation, export validation and the
benchmark all score such data against such a model; they share :func:`align_labels` so they agree on
what matches and say it the same way.
"""

from __future__ import annotations

import logging

import numpy as np

from toolkit.errors import ToolkitError

log = logging.getLogger("toolkit.data")


def match_labels(data_labels: tuple, model_labels: tuple, spec: str) -> np.ndarray | None:
    """How the data's class indices map onto the model's.

    Args:
        data_labels: the data's class names (index = the data's integer label).
        model_labels: the model's class names (index = the model's output column).
        spec: the data spec, named in the error.

    Returns:
        None when the names are equal; else ``mapping`` with ``mapping[data_index] = model_index``, for data
        whose names are the integers 0..C-1 (in any order) and a model with C labels.

    Raises:
        ToolkitError: the names are neither equal nor the integers 0..C-1; one line naming both lists.
    """
    data_labels, model_labels = tuple(str(x) for x in data_labels), tuple(str(x) for x in model_labels)
    if data_labels == model_labels:
        return None
    wanted = {str(i) for i in range(len(model_labels))}
    if len(data_labels) == len(model_labels) and set(data_labels) == wanted:
        return np.array([int(name) for name in data_labels], dtype=np.int64)
    raise ToolkitError(
        f"{spec}: data labels {', '.join(data_labels)} do not match the model's {', '.join(model_labels)} "
        f"(need the same names, or the integers 0..{len(model_labels) - 1} to match by index)"
    )


def align_labels(ds, model_labels: tuple):
    """``ds`` (a :class:`~toolkit.data.Dataset`) relabelled with the model's class names, when they match.

    Unnamed integer classes are matched by index and one ``info`` line on ``toolkit.data`` says so.

    Raises:
        ToolkitError: the labels do not match (see :func:`match_labels`).
    """
    mapping = match_labels(ds.labels, model_labels, ds.spec)
    if mapping is None:
        return ds
    log.info(
        "data labels %s matched to model labels %s by index",
        ", ".join(sorted(ds.labels, key=int)),
        ", ".join(model_labels),
    )
    return ds.relabel(tuple(model_labels), mapping)
