"""The command line: fast help, one-line errors, and a clear message when TensorFlow is missing."""

import subprocess
import sys
import time

from toolkit.cli import main


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_is_fast_and_imports_no_tensorflow():
    t0 = time.perf_counter()
    proc = _run("import sys; from toolkit.cli import main\n"
                "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
                "print('TF' if 'tensorflow' in sys.modules else 'no TF')")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "evaluate" in proc.stdout
    assert proc.stdout.strip().endswith("no TF")
    assert elapsed < 10  # generous: a loaded CI machine; the point is that TF (5 s+) is not imported


def test_training_without_the_train_extra_says_how_to_install_it(tmp_path):
    # Block the import as a machine without the extra would: `import tensorflow` raises ImportError.
    proc = _run("import sys; sys.modules['tensorflow'] = None\n"
                "from toolkit.cli import main\n"
                f"sys.exit(main(['train', 'happy', '--data', 'synthetic:happy', '--out', r'{tmp_path / 'r'}']))")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: TensorFlow is not installed: install the training extra with "
                                   "pip install 'door-camera-toolkit[train]'")
    assert not (tmp_path / "r").exists()


def test_usage_errors_are_one_line(capsys):
    assert main(["train", "happy"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Missing option '--data'") and "\n" not in err
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_summary_prints_parameters_and_macs(capsys):
    assert main(["summary", "happy"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 37,633" in out
    # conv0: 64x64 outputs x 32 filters x 7x7x3 window
    assert f"{64 * 64 * 32 * 7 * 7 * 3:,}" in out


def test_quiet_and_strict_wherever_data_is(tmp_path, capsys):
    """Issue 23, defect 4: 'pipeline run --quiet' and 'evaluate --strict' were "No such option"."""
    from PIL import Image
    from runtime_support import make_export  # tests/runtime's helper, importable through tests/conftest.py

    assert main(["pipeline", "run", str(tmp_path / "none.toml"), "--quiet", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "No such option" not in err and "none.toml" in err
    for command in (["export", "RUN"], ["benchmark", "FOLDER"], ["evaluate", "RUN"], ["train", "happy"]):
        assert main([*command, "--help"]) == 0
        assert "--strict" in capsys.readouterr().out, command
    export = make_export(tmp_path / "exp")
    for label in ("no_smile", "smile"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        grey = 40 + 180 * (label == "smile")
        for i in range(2):
            Image.new("RGB", (20, 20), (grey,) * 3).save(tmp_path / "photos" / label / f"{i}.png")
    (tmp_path / "photos" / "smile" / "broken.jpg").write_bytes(b"not a jpeg")
    assert main(["evaluate", str(export), "--data", str(tmp_path / "photos")]) == 0
    assert "broken.jpg" in capsys.readouterr().err  # skipped with a warning
    assert main(["evaluate", str(export), "--data", str(tmp_path / "photos"), "--strict"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "broken.jpg" in err and "\n" not in err
