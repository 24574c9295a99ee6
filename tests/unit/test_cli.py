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
