"""A full disk during training, feature caching and export: one clear error line, earlier artifacts intact.

The disk is a small tmpfs when the tests run as root (CI does); otherwise the child runs under
RLIMIT_FSIZE, where writes fail with EFBIG instead of ENOSPC (``python -m benchmarks.selftest`` shows both).
"""

import errno

import pytest

from benchmarks.diskfull import caching_full, export_full, training_full
from toolkit.errors import disk_full_error

pytestmark = pytest.mark.slow


def _check(result: dict, announce) -> None:
    announce(f"disk full during {result['what']} ({result['free_kb']} KB free, {result['method']}): "
             f"{result['error'] or 'no error'}")
    assert result["rc"] == 2, "the run should have hit the full disk"
    assert result["clear"], f"expected one 'error:' line and no traceback, got: {result}"
    assert "no space left on device" in result["error"] or "file too large" in result["error"]
    assert result["earlier_intact"]


def test_training_on_a_full_disk(tmp_path, announce, tiny_run):
    result = training_full(tmp_path, tiny_run, free_kb=60)
    _check(result, announce)
    assert "config.json" in result["left"]  # what was written stays, so --resume can continue after freeing space
    assert "/new-run/backup: " in result["error"]  # the resume state's checkpoint is the first big write


def test_feature_caching_on_a_full_disk(tmp_path, announce, tiny_run):
    result = caching_full(tmp_path, tiny_run, free_kb=8)
    _check(result, announce)
    assert result["unfinished_left"] == 0  # the half-written entry is removed, not left for a later run


def test_export_on_a_full_disk_keeps_the_earlier_export(tmp_path, announce, tiny_run, tiny_export):
    result = export_full(tmp_path, tiny_run, tiny_export, free_kb=30)
    _check(result, announce)
    assert "nothing was written" in result["error"]
    assert result["staging_left"] == []


@pytest.mark.parametrize("exc, where", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/runs/a/.model.tmp.keras"), "/data/runs/a"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/x.json"), "/q/x.json"),
    # The resume state's checkpoint writer, as TensorFlow 2.21 words it (a ResourceExhaustedError) ...
    (RuntimeError("{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                  "/r/backup/ckpt-0_temp/part-00000-of-00001.data-00000-of-00001.tempstate12216863727188777114; "
                  "No space left on device [Op:SaveV2]"), "/r/backup"),
    # ... and under a file-size limit (ulimit -f), where it fails with EFBIG's text (an OutOfRangeError).
    (RuntimeError("{{function_node __wrapped__SaveV2_dtypes_2_device_/job:localhost/replica:0/task:0/device:CPU:0}} "
                  "/r/backup/ckpt-0_temp/part-00000-of-00001.data-00000-of-00001.tempstate1400225517658387602; "
                  "File too large [Op:SaveV2]"), "/r/backup"),
])
def test_disk_full_errors_name_the_folder_in_one_line(exc, where):
    err = disk_full_error(exc)
    assert err is not None and str(err).startswith(f"{where}: ") and "\n" not in str(err)


def test_other_errors_are_not_taken_for_a_full_disk():
    assert disk_full_error(OSError(errno.EACCES, "Permission denied", "/x")) is None
    assert disk_full_error(ValueError("bad value")) is None
