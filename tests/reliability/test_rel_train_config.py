"""Wrong settings, everywhere: one ``error:`` line naming the key, exit status 2, nothing started.

Pipeline cases are generated from the pipeline schema (every key: a value of the wrong type, a value
outside its choices or bounds, and an unknown key in every section); CLI cases from the typer commands'
own parameters (every numeric option given a word). Cross-key rules are listed by hand.
"""

import logging

import pytest
import typer

from benchmarks.common import DATA
from toolkit.cli import app, main
from toolkit.pipeline.spec import SCHEMA
from toolkit.settings import BOOL as _BOOL
from toolkit.settings import FLOAT as _FLOAT
from toolkit.settings import INT as _INT
from toolkit.settings import LIST as _LIST
from toolkit.settings import STR as _STR

PIPELINE = "pipelines/happy.toml"
WRONG_TYPE = {_INT: '"abc"', _FLOAT: '"abc"', _STR: "true", _BOOL: '"yes"', _LIST: "5"}  # TOML text for --set
KEYS = [(section, key) for section, rules in SCHEMA.items() for key in rules]


def _check(sets: list[str], capsys) -> list[str]:
    """Run ``pipeline check`` with these --set overrides; return the error lines."""
    args = ["pipeline", "check", PIPELINE]
    for item in sets:
        args += ["--set", item]
    rc = main(args)
    err = capsys.readouterr().err.splitlines()
    assert rc == 2, f"{sets} was accepted"
    assert err and all(line.startswith("error: ") for line in err), err
    return err


def _with_section(section: str, item: str) -> list[str]:
    """The optional [pretrain] section needs its two required keys before one of its values can be judged."""
    extra = ['pretrain.model="happy"', 'pretrain.data="synthetic:happy"'] if section == "pretrain" else []
    return [*[e for e in extra if not item.startswith(e.split("=")[0] + "=")], item]


@pytest.mark.parametrize("section, key", KEYS, ids=[f"{s}.{k}" for s, k in KEYS])
def test_every_pipeline_key_with_a_wrong_type(section, key, capsys):
    kind = SCHEMA[section][key]["kind"]
    err = _check(_with_section(section, f"{section}.{key}={WRONG_TYPE[kind]}"), capsys)
    assert len(err) == 1 and f"{section}.{key}: must be" in err[0], err


CHOICES = [(s, k) for s, k in KEYS if SCHEMA[s][k]["choices"]]


@pytest.mark.parametrize("section, key", CHOICES, ids=[f"{s}.{k}" for s, k in CHOICES])
def test_every_pipeline_key_with_choices_given_another_value(section, key, capsys):
    is_list = SCHEMA[section][key]["kind"] == _LIST
    err = _check(_with_section(section, f'{section}.{key}={["bogus"] if is_list else "bogus"!r}'.replace("'", '"')),
                 capsys)
    want = "unknown value 'bogus'; choose from" if is_list else "must be one of"
    assert len(err) == 1 and f"{section}.{key}: {want}" in err[0], err


BOUNDED = [(s, k) for s, k in KEYS if SCHEMA[s][k]["low"] is not None or SCHEMA[s][k]["above"] is not None]


@pytest.mark.parametrize("section, key", BOUNDED, ids=[f"{s}.{k}" for s, k in BOUNDED])
def test_every_bounded_pipeline_key_just_out_of_bounds(section, key, capsys):
    rule = SCHEMA[section][key]
    value = rule["low"] - 1 if rule["low"] is not None else rule["above"]
    err = _check(_with_section(section, f"{section}.{key}={value}"), capsys)
    assert len(err) == 1 and f"{section}.{key}: must be" in err[0], err


NUMERIC = [(s, k) for s, k in KEYS if SCHEMA[s][k]["kind"] in (_INT, _FLOAT)]


@pytest.mark.parametrize("section, key", NUMERIC, ids=[f"{s}.{k}" for s, k in NUMERIC])
def test_no_numeric_pipeline_key_accepts_minus_one(section, key, capsys):
    err = _check(_with_section(section, f"{section}.{key}=-1"), capsys)
    assert any(f"{section}.{key}" in line for line in err), err


@pytest.mark.parametrize("section", list(SCHEMA))
def test_an_unknown_key_in_every_section(section, capsys):
    err = _check(_with_section(section, f"{section}.no_such_key=1"), capsys)
    assert len(err) == 1 and f"{section}.no_such_key: unknown key" in err[0], err


@pytest.mark.parametrize("sets, key", [
    (["bogus.x=1"], "[bogus]: unknown section"),
    (["data.image_size=8"], "data.image_size"),
    (["data.val=0.6", "data.test=0.5"], "data.val"),
    (['train.freeze="some"'], "train.freeze"),
    (['train.weights="imagenet"'], "train.weights"),  # weights only apply to freeze/cached modes
    (['train.mode="cached"', 'train.weights="imagenet"', "train.freeze=10"], "train.mode"),
    (["train.unfreeze_at=3", 'train.mode="freeze"', 'train.weights="imagenet"'], "train.unfreeze_at"),
    (["export.max_drop=101"], "export.max_drop"),
    (["export.target_far=1.0"], "export.target_far"),
    (['export.formats=["onnx", "pt"]'], "export.formats"),
    (["export.quantize=[]"], "export.quantize"),
    (["benchmark.threads=[-1]"], "benchmark.threads"),
    (["benchmark.batch_size=[0]"], "benchmark.batch_size"),
])
def test_values_that_break_rules_across_keys(sets, key, capsys):
    err = _check(sets, capsys)
    assert any(key in line for line in err), err


def _numeric_options(command: str):
    click_cmd = typer.main.get_command(app)
    cmd = click_cmd.commands[command]
    for param in cmd.params:
        if param.param_type_name == "option" and param.type_descriptor.annotation in (int, float):
            yield param.opts[0]


REQUIRED = {
    "train": ["happy", "--data", DATA, "--out", "unused-run"],
    "finetune": ["happy", "--data", DATA, "--out", "unused-run"],
    "export": ["unused-run", "--out", "unused-export"],
}
FLAGS = [(c, o) for c in REQUIRED for o in _numeric_options(c)]


@pytest.mark.parametrize("command, option", FLAGS, ids=[f"{c} {o}" for c, o in FLAGS])
def test_every_numeric_cli_option_given_a_word(command, option, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main([command, *REQUIRED[command], option, "abc"])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and option in err[0] and err[0].startswith("error: "), err
    assert list(tmp_path.iterdir()) == []  # nothing was started


@pytest.mark.parametrize("flags, key", [
    (["--epochs", "0"], "epochs"),
    (["--epochs", "-3"], "epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "0"], "lr"),
    (["--val", "0.7", "--test", "0.5"], "val and test"),
    (["--optimizer", "adamw"], "optimizer"),
    (["--augment", "flip,sharpen"], "--augment"),
    (["--patience", "-1"], "patience"),
])
def test_train_flags_out_of_range(flags, key, capsys, tmp_path):
    rc = main(["train", "happy", "--data", DATA, "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and len(err) == 1 and key in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_batch_size_larger_than_the_data_is_one_warning_line_and_trains(tmp_path):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("toolkit.train")
    logger.addHandler(handler)
    try:
        rc = main(["train", "happy", "--data", DATA, "--image-size", "32", "--epochs", "1", "--batch-size", "1000",
                   "--out", str(tmp_path / "run")])
    finally:
        logger.removeHandler(handler)
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert rc == 0 and len(warnings) == 1 and "batch size 1000 is larger than the" in warnings[0]


@pytest.mark.slow
def test_freeze_beyond_the_layer_count_names_the_flag_and_leaves_nothing(tmp_path, capsys, tiny_run):
    out = tmp_path / "ft"
    rc = main(["finetune", "happy", "--weights", str(tiny_run), "--data", DATA, "--image-size", "32",
               "--freeze", "999", "--out", str(out)])
    text = capsys.readouterr().err
    err = [line for line in text.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --freeze 999: the model has"), text
    assert "Traceback" not in text
    assert not out.exists()
