"""One declaration per setting: the CLI options and the pipeline schema are derived from the config fields."""

import dataclasses

import pytest
import typer

from toolkit import settings as S
from toolkit.bench.config import BenchmarkConfig
from toolkit.cli import app, main
from toolkit.config import FinetuneConfig, ModelOptions, TrainConfig
from toolkit.export.config import ExportConfig
from toolkit.pipeline import load_pipeline
from toolkit.pipeline.spec import SCHEMA, SECTIONS

COMMANDS = {"train": (TrainConfig, ModelOptions), "finetune": (FinetuneConfig, ModelOptions),
            "export": (ExportConfig,), "benchmark": (BenchmarkConfig,)}


def _options(name: str) -> dict:
    """{parameter name: click parameter} of a top-level command, as typer built it."""
    command = typer.main.get_command(app).commands[name]
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_cli_field_is_an_option_with_the_declared_default_and_help(name):
    params = _options(name)
    for cls in COMMANDS[name]:
        for f in dataclasses.fields(cls):
            m = S.meta(f)
            if not m["cli"] or (name == "train" and f.name == "preprocess"):
                assert f.name not in params or name == "finetune"
                continue
            p = params[f.name]
            assert m["help"] and p.help == m["help"] or m["help"] in (p.help or ""), f.name
            default = S.default_of(f)
            if default is not dataclasses.MISSING:
                assert p.default == S.as_text(default), f.name


@pytest.mark.parametrize("section, key", [(s, k) for s, keys in SECTIONS.items() for k in keys])
def test_every_pipeline_key_is_a_declared_field(section, key):
    cls, field = SECTIONS[section][key]
    f = S.fields_of(cls)[field]
    assert S.meta(f)["help"], f"{cls.__name__}.{field} has no help"
    assert SCHEMA[section][key]["kind"] == S.kind_of(cls, field)[0]


def test_cli_and_pipeline_defaults_agree(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[data]\nspec = "synthetic:happy"\n[train]\nmodel = "happy"\n')
    p = load_pipeline(path)
    assert tuple(p.section("export")["quantize"]) == ExportConfig(source="s", out="o").quantize == ("none",)
    assert p.section("train")["epochs"] == TrainConfig(model="m", data="d", out="o").epochs
    assert tuple(p.section("benchmark")["threads"]) == BenchmarkConfig(folder="f").threads == (1, "all")
    path.write_text(path.read_text() + 'mode = "freeze"\nweights = "w"\n')
    assert load_pipeline(path).section("train")["epochs"] == FinetuneConfig(model="m", data="d", out="o").epochs


def test_renamed_pipeline_keys_still_work_with_one_warning(tmp_path, caplog):
    path = tmp_path / "p.toml"
    path.write_text('[data]\nspec = "synthetic:happy"\n[train]\nmodel = "happy"\n'
                    "[benchmark]\nbatch = [1, 4]\nthreads = [1, 0]\n")
    p = load_pipeline(path)
    assert p.section("benchmark")["batch_size"] == [1, 4] and p.section("benchmark")["threads"] == [1, "all"]
    err = caplog.text
    assert "benchmark.batch is deprecated; use benchmark.batch_size" in err and 'write "all"' in err


@pytest.mark.parametrize("old, new", [
    (["benchmark", "exported/happy", "--batch", "0"], "--batch is deprecated; use --batch-size"),
    (["summary", "happy", "--input", "8"], "--input is deprecated; use --image-size"),
    (["data", "synth", "happy", "--out", "/nonexistent/x", "--n", "0"], "--n is deprecated; use --count"),
])
def test_old_flags_still_parse_and_name_the_new_flag(old, new, capsys):
    main(old)
    assert new in capsys.readouterr().err


def test_bad_values_are_one_line_naming_the_flag(capsys):
    assert main(["benchmark", "exported/happy", "--threads", "1,x"]) == 2
    assert capsys.readouterr().err == "error: --threads: 'x' is not an integer (give a comma list such as 1,8)\n"
    assert main(["export", "runs/x", "--out", "o", "--quantize", "int4"]) == 2
    assert "error: --quantize: unknown value 'int4'; choose from none, dynamic, float16, int8, qat or all" in \
        capsys.readouterr().err
    assert main(["train", "happy", "--data", "d", "--out", "o", "--val", "0.6", "--test", "0.5"]) == 2
    assert capsys.readouterr().err.startswith("error: --val: val and test must be fractions that sum below 1")


@pytest.mark.parametrize("argv", [[], ["door"], ["pipeline"], ["data"], ["cache"]])
def test_no_arguments_print_help_and_exit_0(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out.startswith("Usage: toolkit") and out.err == ""


@pytest.mark.parametrize("argv", [["-h"], ["train", "-h"], ["door", "run", "-h"], ["export", "-h"]])
def test_dash_h_is_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage: toolkit" in capsys.readouterr().out


def test_choice_options_show_their_choices(capsys):
    main(["train", "-h"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--optimizer <adam|sgd|rmsprop>" in out
    assert "Choose from: flip, rotate, zoom, shear, color, pca, colorcast, lowres, blur, jpeg." in out
    main(["door", "run", "-h"])
    assert "--detector <none|haar|blazeface>" in capsys.readouterr().out
