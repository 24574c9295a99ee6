"""The real smiles folder (../shared/datasets): the loader finds exactly the problems its README lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.data import load_data

SMILES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smiles"


@pytest.mark.datasets
@pytest.mark.skipif(not SMILES.is_dir(), reason=f"{SMILES} not present")
def test_smiles_duplicates_and_conflicts_match_its_readme():
    ds = load_data(str(SMILES), 64)
    report = ds.report
    assert ds.labels == ("no_smile", "smile")
    assert report.class_counts == {"no_smile": 9475, "smile": 3690}
    assert not report.skipped and report.image_modes == {"L": 13165}
    assert len(report.duplicates) == 7
    assert sorted(report.conflicts) == [
        (f"no_smile/{name}", f"smile/{name}")
        for name in ("10249.jpg", "2422.jpg", "29.jpg", "3308.jpg", "5.jpg")
    ]
    assert ("no_smile/1637.jpg", "no_smile/3535.jpg") in report.duplicates
    assert ("no_smile/334.jpg", "no_smile/7798.jpg") in report.duplicates
    # Duplicates never straddle splits: no decoded image appears in two of them.
    splits = ds.split(seed=0)
    seen = [{img.tobytes() for img in s.numpy()[0]} for s in (splits.train, splits.val, splits.test)]
    assert sum(len(s) for s in (splits.train, splits.val, splits.test)) == 13165
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
