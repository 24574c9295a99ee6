"""Build the export folder's ``manifest.json`` from the runtime's manifest dataclasses."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from toolkit.inference.manifest import FileEntry, InputSpec, Manifest, sha256_file

# The file the door serves by default, best first. Post-training int8 ONNX is fused by ORT into integer
# kernels; the QAT ONNX (converted from the QAT int8 TFLite) runs DQ -> float conv and is measured ~5x
# slower on ResNet50, so it serves only when there is no PTQ int8 file.
SERVE_ORDER = ("int8", "qat", "none", "float16", "dynamic")


def provenance(path: Path, run_dir: Path | None = None) -> dict:
    """A file outside the export as a name and a sha256: ``{"name", "run", "sha256"}``, never a path.

    A manifest names nothing outside its own folder (paths are the making machine's and break when folders
    move); the sha256 tells whether a file found later is the one (``toolkit benchmark --run`` checks it).
    """
    path = Path(path)
    record = {"name": path.name, "sha256": sha256_file(path)}
    if run_dir is not None:
        record["run"] = Path(run_dir).resolve().name
    return record


def spec_name(spec: str | None) -> str | None:
    """A data spec without the folders above its data: ``../shared/datasets/smiles?n=2000`` -> ``smiles?n=2000``.

    The split fingerprints beside it tell which images it was.
    """
    if not spec or str(spec).startswith("synthetic:"):
        return spec
    path, sep, query = str(spec).partition("?")
    return (Path(path).name or path) + sep + query


def choose_serve(entries: dict) -> str | None:
    """The best validated ONNX file for the Pi: post-training int8, else QAT int8, else float."""
    for q in SERVE_ORDER:
        for name, e in entries.items():
            if e.format == "onnx" and e.quantization == q:
                return name
    return None


def file_entry(path: Path, fmt, validation: dict, threshold: dict | None, input_dtype: str,
               mixed_precision: dict | None = None) -> FileEntry:
    return FileEntry(
        format=fmt.name,
        quantization=fmt.quantization,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        validation=validation,
        threshold=None if threshold is None else threshold["threshold"],
        far=None if threshold is None else threshold["far"],
        frr=None if threshold is None else threshold["frr"],
        input_dtype=None if input_dtype == "float32" else input_dtype,
        mixed_precision=mixed_precision,
    )


def build_manifest(
    *,
    name: str,
    model_name: str,
    labels: tuple,
    image_size: tuple,
    output_kind: str,
    entries: dict,
    target_far: float,
    source: dict,
    data: dict,
    versions: dict,
    detector: dict | None = None,
    base: dict | None = None,
) -> Manifest:
    h, w = image_size
    return Manifest(
        name=name,
        model=model_name,
        labels=tuple(labels),
        input=InputSpec(shape=(None, int(h), int(w), 3)),
        output_kind=output_kind,
        files=entries,
        serve=choose_serve(entries),
        target_far=target_far if output_kind == "sigmoid" else None,
        source_model=source,
        data=data,
        versions=versions,
        detector=detector or {},
        base=base or {},
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
