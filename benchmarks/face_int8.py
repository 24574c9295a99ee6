"""Does an int8 expression CNN hold in the face-landmark chain? The head's probabilities, float vs int8.

    python -m benchmarks.face_int8 [--model exported/happy-face] [--data ../shared/datasets/smiles?n=2000&seed=1]

The export's own test split (its manifest's data spec, split as ``toolkit face-model`` splits it: seed 0,
``--test``) goes through the export's detector and face mesh once; each aligned face crop then goes through the
float expression ONNX and through an int8 copy (onnxruntime static quantization, QDQ, per channel, calibrated on
``--calibration`` aligned crops of the training part), and both feature rows through the export's head. Printed:
max and median |dp|, agreement of the decisions at the manifest threshold, AUC float vs int8, both files' sizes
and their p50 time on one thread.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import cli
from benchmarks.face_shift import auc


def crops(pipeline, images) -> tuple[list, np.ndarray]:
    """(aligned 64x64 crops of the faces found, the landmark rows) and which images had a face."""
    from toolkit.inference.facemesh import aligned_crop, features
    from toolkit.inference.handpipe import upscale

    out, marks, found = [], [], []
    for image in images:
        image = upscale(np.asarray(image, np.uint8), pipeline.min_side)
        det = pipeline.detector.detect(image)
        face = pipeline.mesh.from_detection(image, det[0]) if det else None
        found.append(face is not None)
        if face is not None:
            out.append(aligned_crop(image, face)[None].astype(np.float32))
            marks.append(features(face))
    return out, (np.stack(marks) if marks else np.zeros((0, 1404))), np.array(found)


def quantize(src: Path, dst: Path, calibration: list) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(calibration)

        def get_next(self):
            x = next(self.items, None)
            return None if x is None else {"image": x}

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def p50_ms(path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    for _ in range(5):
        s.run(None, {"image": x})
    t = []
    for _ in range(100):
        t0 = time.perf_counter()
        s.run(None, {"image": x})
        t.append(time.perf_counter() - t0)
    return 1000 * float(np.median(t))


def main(argv: list[str] | None = None) -> int:
    p = cli.parser("face_int8", __doc__)
    p.add_argument("--model", default="exported/happy-face")
    p.add_argument("--data", default="/work/shared/datasets/smiles?n=2000&seed=1")
    p.add_argument("--test", type=float, default=0.15)
    p.add_argument("--calibration", type=int, default=200)
    args = p.parse_args(argv)
    import onnxruntime as ort

    from toolkit.data import load_data
    from toolkit.export.facemesh import resolve
    from toolkit.images import decode_image
    from toolkit.inference.facepipe import open_face_pipeline
    from toolkit.inference.manifest import load_manifest

    folder = Path(args.model)
    m = load_manifest(folder)
    pipeline = open_face_pipeline(folder, m.face)
    head = m.face["head"]
    expr_file = folder / m.face["files"]["expression"]
    splits = load_data(args.data, (64, 64)).split(seed=0, val=0.0, test=args.test)
    read = lambda part, n=None: [decode_image(resolve(args.data, name), None) for name in part.names[:n]]  # noqa: E731
    calib, _, _ = crops(pipeline, read(splits.train, args.calibration))
    test_crops, marks, found = crops(pipeline, read(splits.test))
    y = np.asarray(splits.test.numpy()[1])[found]
    head_session = ort.InferenceSession(str(folder / m.serve), providers=["CPUExecutionProvider"])

    def probs(path: Path) -> np.ndarray:
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        s = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
        e = np.stack([s.run(None, {"image": c})[0].reshape(-1) for c in test_crops])
        blocks = {"expression": e, "landmarks": marks}
        x = np.concatenate([blocks[k] for k in head["blocks"]], axis=1).astype(np.float32)
        out = head_session.run(None, {head_session.get_inputs()[0].name: x})[0]
        return np.asarray(out, np.float64).reshape(len(x), -1)[:, -1]  # P(smile)

    with tempfile.TemporaryDirectory() as tmp:
        q = Path(tmp) / "expression_int8.onnx"
        quantize(expr_file, q, calib)
        pf, pq = probs(expr_file), probs(q)
        d = np.abs(pf - pq)
        t = m.files[m.serve].threshold
        print(f"{folder}: {len(y)} test photos with a face of {len(found)} (split: {args.data}, test {args.test}); "
              f"int8 calibrated on {len(calib)} training crops")
        acc = lambda p: 100 * np.mean((p >= t) == (y == 1))  # noqa: E731
        print(f"max |dp| {d.max():.4f}, median |dp| {np.median(d):.4f}, decisions at {t:.3f} agree "
              f"{100 * np.mean((pf >= t) == (pq >= t)):.1f} %, AUC float {auc(pf, y):.4f} int8 {auc(pq, y):.4f}, "
              f"accuracy float {acc(pf):.1f} % int8 {acc(pq):.1f} %")
        print(f"size float {expr_file.stat().st_size / 1e3:.0f} kB, int8 {q.stat().st_size / 1e3:.0f} kB; p50 1 "
              f"thread float {p50_ms(expr_file, test_crops[0]):.2f} ms, int8 {p50_ms(q, test_crops[0]):.2f} ms")
    return 0


if __name__ == "__main__":
    cli.run(main)
