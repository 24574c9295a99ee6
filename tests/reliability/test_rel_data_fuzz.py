"""Hypothesis fuzzing of the image decoder, image folders and course .h5 files (short budgets; the long
ones run in ``python -m benchmarks.selftest --only fuzz``). Every case ends in data or one ToolkitError line,
in time."""

import pytest

from benchmarks.fuzz import fuzz_decode, fuzz_folders, fuzz_h5


@pytest.mark.parametrize("fuzz, budget", [(fuzz_decode, 150), (fuzz_folders, 40), (fuzz_h5, 120)],
                         ids=["decode_image", "folders", "h5"])
def test_loaders_never_crash_or_hang(seed, fuzz, budget, announce):
    tally = fuzz(budget, seed)
    announce(f"fuzz {tally.name}, seed {seed}: {tally.cases} cases tried, {tally.accepted} accepted, "
             f"{tally.refused} refused in one line, {tally.skipped_files} files skipped, slowest "
             f"{tally.slowest:.2f} s")
    assert tally.failures == [], tally.failures[0]
    assert tally.cases >= budget
    assert tally.refused > 0  # the generators do produce hostile input
    if fuzz is not fuzz_folders:
        assert tally.accepted > 0  # ...and valid input too
