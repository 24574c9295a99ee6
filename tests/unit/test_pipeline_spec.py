"""Pipeline files are validated whole before any work: one line per problem, naming the key."""

import inspect
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.errors import ToolkitError
from toolkit.pipeline import load_pipeline
from toolkit.pipeline.run import run_pipeline

PIPELINES = sorted(Path(__file__).resolve().parents[2].joinpath("pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.stem)
def test_shipped_pipelines_are_valid_and_need_no_files(path):
    p = load_pipeline(path)
    if p.section("train")["mode"] == "face":  # the face mesh needs real faces: it reads the user's photos
        assert not p.section("data")["spec"].startswith("synthetic:")
    else:
        assert p.section("data")["spec"].startswith("synthetic:")
    assert p.section("export")["out"] == f"runs/demo/{p.name}"


def test_shipped_pipelines_write_only_where_git_ignores():
    """`make demo` must leave a clean checkout clean: exports, reports and step state all land in ignored folders."""
    root = PIPELINES[0].parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    work = inspect.signature(run_pipeline).parameters["work_root"].default
    shipped = [load_pipeline(p) for p in PIPELINES]
    paths = [f"{p.section('export')['out']}/{name}" for p in shipped
             for name in ("manifest.json", "report.html", "benchmark.json")]
    paths += [f"{work}/{p.name}/state.json" for p in shipped]
    ignored = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=root, capture_output=True, text=True)
    assert ignored.stdout.split() == paths


def test_shipped_set_covers_the_four_training_modes():
    modes = {load_pipeline(p).section("train")["mode"] for p in PIPELINES}
    assert modes == {"scratch", "freeze", "cached", "face"}
    assert {p.stem for p in PIPELINES} >= {"happy", "happy_qat", "signs_resnet50", "signs_resnet50_freeze40",
                                           "signs_resnet50_cached", "door", "door_expression"}


def _write(tmp_path, text):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


BASE = '[data]\nspec = "synthetic:happy"\n[train]\nmodel = "happy"\n'


@pytest.mark.parametrize("extra, message", [
    ("[train2]\nx = 1\n", "[train2]: unknown section"),
    ('[export]\nformat = ["onnx"]\n', "export.format: unknown key"),
    ("[benchmark]\nthreads = 1\n", "benchmark.threads: must be a list"),
    ('[data2]\n', "[data2]: unknown section"),
])
def test_unknown_keys_and_wrong_types_name_the_key(tmp_path, extra, message):
    with pytest.raises(ToolkitError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_pipeline(_write(tmp_path, BASE + extra))


@pytest.mark.parametrize("sets, message", [
    (["train.epochs=0"], "train.epochs: must be a positive integer, got 0"),
    (["train.epochs=2.5"], "train.epochs: must be an integer, got float"),
    (["train.mode='cached'", "train.weights='imagenet'", "train.freeze=40"], "train.mode: 'cached' trains the head"),
    (["train.weights='pretrain'", "train.mode='freeze'"], "'pretrain' needs a [pretrain] section"),
    (["export.quantize=['int4']"], "export.quantize: unknown value 'int4'"),
    (["export.target_far=1.5"], "export.target_far: must be in [0, 1)"),
    (["data.val=0.6", "data.test=0.5"], "data.val: val and test must be fractions"),
    (["train.unfreeze_at=10"], "train.unfreeze_at: only applies to mode"),
    (["train.feature_layer='res2c_out'"], "train.feature_layer: only applies to mode"),
    (["benchmark.batch_size=[0]"], "benchmark.batch_size: must be a list of positive integers, got 0"),
    (["benchmark.threads=[-1, 2]"], "benchmark.threads: must be a list of positive integers, got -1"),
    (["train.strategy='tpu'"], "train.strategy: must be one of auto, one, mirrored, multiworker, got 'tpu'"),
    (["pretrain.model='happy'", "pretrain.data='synthetic:happy'", "train.strategy='multiworker'"],
     "pretrain.strategy: is 'auto' but train.strategy is 'multiworker'"),
])
def test_impossible_values_and_combinations(tmp_path, sets, message):
    with pytest.raises(ToolkitError) as err:
        load_pipeline(_write(tmp_path, BASE), sets=sets)
    assert message in str(err.value)


def test_every_problem_is_reported_at_once_one_line_each(tmp_path, capsys):
    path = _write(tmp_path, BASE + "[export]\nformatz = 1\nmax_dropp = 2\n")
    assert main(["pipeline", "check", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"error: {path}: export.") for line in lines)


def test_overrides_and_missing_parts(tmp_path):
    p = load_pipeline(_write(tmp_path, BASE), data="photos/", sets=["train.epochs=3", "export.out='x/y'"])
    assert p.section("data")["spec"] == "photos/" and p.section("train")["epochs"] == 3
    assert p.section("export")["out"] == "x/y"
    with pytest.raises(ToolkitError, match="expected section.key=value"):
        load_pipeline(_write(tmp_path, BASE), sets=["epochs=3"])
    with pytest.raises(ToolkitError, match=r"\[train\]: required section is missing"):
        load_pipeline(_write(tmp_path, '[data]\nspec = "synthetic:happy"\n'))
    with pytest.raises(ToolkitError, match="train.model: required key is missing"):
        load_pipeline(_write(tmp_path, '[data]\nspec = "synthetic:happy"\n[train]\nepochs = 1\n'))
    with pytest.raises(ToolkitError, match="not valid TOML"):
        load_pipeline(_write(tmp_path, "[data\n"))
    with pytest.raises(ToolkitError, match="pipeline file not found"):
        load_pipeline(tmp_path / "none.toml")


FACE = '[data]\nspec = "photos"\ntest = 0.2\n[train]\nmode = "face"\n[face]\nblocks = "landmarks"\n'


@pytest.mark.parametrize("sets, message", [
    (["train.epochs=3"], "train.epochs: does not apply to train.mode 'face'; its settings are in [face]"),
    (["export.quantize=['int8']"], "export.quantize: does not apply to train.mode 'face'"),
    (["data.test=0"], "data.test: train.mode 'face' holds photos out"),
    (["face.blocks='pixels'"], "face.blocks: must be one of auto, expression, landmarks, fused"),
    (["face.copies=['fog']"], "face.copies: unknown value 'fog'"),
    (["face.c_grid=['a']"], "face.c_grid: must be a list of numbers"),
    (["face.target_far=0"], "face.target_far: must be in (0, 1)"),
])
def test_face_mode_names_what_does_not_apply(tmp_path, sets, message):
    with pytest.raises(ToolkitError) as err:
        load_pipeline(_write(tmp_path, FACE), sets=sets)
    assert message in str(err.value)


def test_a_face_section_needs_the_face_mode(tmp_path):
    with pytest.raises(ToolkitError, match=r"\[face\]: applies only to train.mode = 'face'"):
        load_pipeline(_write(tmp_path, BASE + "[face]\nblocks = 'fused'\n"))
    assert "face" not in load_pipeline(_write(tmp_path, BASE)).settings  # no [face] full of defaults


def test_face_mode_runs_toolkit_face_model_once_and_skips_it_unchanged(tmp_path, monkeypatch, capsys):
    """The pipeline's [face] is `toolkit face-model`'s config; a second run with nothing changed does no work."""
    import toolkit.export.facemesh as facemesh

    photos = tmp_path / "photos"
    for label in ("no_smile", "smile"):
        (photos / label).mkdir(parents=True)
        (photos / label / "a.jpg").write_bytes(b"x")
    calls = []

    def build(config, log=print):
        calls.append(config)
        Path(config.out).mkdir(parents=True, exist_ok=True)  # overwrite=True: the real one replaces it
        (Path(config.out) / "manifest.json").write_text("{}")
        return Path(config.out)

    monkeypatch.setattr(facemesh, "build_face_model", build)
    text = FACE.replace('"photos"', repr(str(photos)).replace("'", '"')) + "c_grid = [0.01, 0.1]\n"
    path = _write(tmp_path, text)
    assert main(["pipeline", "run", str(path), "--set", f"export.out='{tmp_path / 'out'}'", "--out",
                 str(tmp_path / "work")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert f"exported:     {tmp_path / 'out'}" in printed and "training run" not in printed and len(calls) == 1
    p = load_pipeline(path, sets=[f"export.out='{tmp_path / 'out'}'"])
    c = calls[0]
    assert (c.data, c.blocks, c.test, c.cs, c.folds) == (str(photos), "landmarks", 0.2, (0.01, 0.1), 5)
    assert c.augment == ("colorcast", "lowres", "blur", "jpeg") and c.target_far == 0.05 and c.overwrite
    run_pipeline(p, work_root=tmp_path / "work")
    assert len(calls) == 1  # unchanged: skipped
    run_pipeline(load_pipeline(_write(tmp_path, text), sets=[f"export.out='{tmp_path / 'out'}'",
                                                             "face.blocks='fused'"]), work_root=tmp_path / "work")
    assert len(calls) == 2 and calls[1].blocks == "fused"


def test_face_mode_refuses_cartoons_and_a_missing_folder_in_one_line(tmp_path, capsys):
    path = _write(tmp_path, FACE.replace('"photos"', '"synthetic:happy"'))
    assert main(["pipeline", "run", str(path)]) == 2
    assert "has no real faces for the face mesh" in capsys.readouterr().err
    path = _write(tmp_path, FACE.replace('"photos"', f'"{tmp_path / "none"}"'))
    assert main(["pipeline", "run", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found: take photos with 'toolkit door collect" in err[0]
    assert not (tmp_path / "runs").exists()
