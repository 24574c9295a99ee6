"""What a loader saw: counts, sizes, modes, duplicates, label conflicts and skipped files."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger("toolkit.data")

# Warnings list at most this many files; the count is always exact.
MAX_LISTED = 20


@dataclass
class DataReport:
    """A summary of one loaded data source, printed by ``toolkit data inspect``.

    Attributes:
        spec: the data spec that was loaded.
        source: "folder", "h5" or "synthetic".
        class_counts: items per class name (after skipping unreadable files).
        image_sizes: how many images had each stored (width, height), before resizing.
        image_modes: how many images had each Pillow mode (or "RGB" for arrays), before conversion.
        duplicates: groups of byte-identical items (files, or images in an .h5), any labels.
        conflicts: the duplicate groups whose members carry different labels.
        skipped: (file, reason) for every unreadable file that was left out.
        ignored: files without an image suffix inside class folders (left out silently).
        streamed: True when the images stay on disk and are decoded inside tf.data.
        no_face: with ``?crop=face``, the files where the detector found no face (left out, as at the door).
    """

    spec: str
    source: str
    class_counts: dict[str, int] = field(default_factory=dict)
    image_sizes: Counter = field(default_factory=Counter)
    image_modes: Counter = field(default_factory=Counter)
    duplicates: list[tuple[str, ...]] = field(default_factory=list)
    conflicts: list[tuple[str, ...]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    streamed: bool = False
    no_face: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Number of items loaded."""
        return sum(self.class_counts.values())

    def lines(self) -> list[str]:
        """The report as human-readable lines (what ``toolkit data inspect`` prints)."""
        out = [f"source: {self.spec} ({self.source}{', streamed from disk' if self.streamed else ''})"]
        out.append(f"images: {self.total} in {len(self.class_counts)} classes")
        width = max((len(name) for name in self.class_counts), default=0)
        for name, count in self.class_counts.items():
            share = 100.0 * count / self.total if self.total else 0.0
            out.append(f"  {name:<{width}}  {count:>7}  {share:5.1f}%")
        sizes = ", ".join(f"{w}x{h}: {c}" for (w, h), c in self.image_sizes.most_common())
        out.append(f"stored sizes (WxH): {sizes or '-'}")
        modes = ", ".join(f"{m}: {c}" for m, c in self.image_modes.most_common())
        out.append(f"stored modes: {modes or '-'}")
        out.append(f"duplicate groups (byte-identical): {len(self.duplicates)}")
        out.extend(f"  {' = '.join(group)}" for group in self.duplicates)
        out.append(f"label conflicts (same image, different labels): {len(self.conflicts)}")
        out.extend(f"  {' = '.join(group)}" for group in self.conflicts)
        out.append(f"skipped unreadable files: {len(self.skipped)}")
        out.extend(f"  {path}: {reason}" for path, reason in self.skipped)
        if self.ignored:
            out.append(f"ignored non-image files: {len(self.ignored)}")
        if "crop=face" in self.spec:
            out.append(f"no face found (left out): {len(self.no_face)}")
            out.extend(f"  {path}" for path in self.no_face)
        return out

    def to_dict(self) -> dict:
        """A JSON-ready dict, for run configs and manifests."""
        return {
            "spec": self.spec,
            "source": self.source,
            "class_counts": dict(self.class_counts),
            "image_sizes": {f"{w}x{h}": c for (w, h), c in self.image_sizes.items()},
            "image_modes": dict(self.image_modes),
            "duplicates": [list(g) for g in self.duplicates],
            "conflicts": [list(g) for g in self.conflicts],
            "skipped": [list(s) for s in self.skipped],
            "ignored": list(self.ignored),
            "streamed": self.streamed,
            "no_face": list(self.no_face),
        }

    def warn(self) -> None:
        """Log one warning line per problem kind, naming the files and the count."""
        if self.skipped:
            log.warning(
                "%s: skipped %d unreadable file(s): %s",
                self.spec,
                len(self.skipped),
                _listing(f"{p} ({r})" for p, r in self.skipped),
            )
        if self.no_face:
            log.warning("%s: no face found in %d image(s), left out: %s", self.spec, len(self.no_face),
                        _listing(self.no_face))
        if self.duplicates:
            files = sum(len(g) for g in self.duplicates)
            log.warning(
                "%s: %d group(s) of byte-identical images (%d items; kept in the same split): %s",
                self.spec,
                len(self.duplicates),
                files,
                _listing(" = ".join(g) for g in self.duplicates),
            )
        if self.conflicts:
            log.warning(
                "%s: %d label conflict(s), the same image under different labels: %s",
                self.spec,
                len(self.conflicts),
                _listing(" = ".join(g) for g in self.conflicts),
            )


class _Once(logging.Filter):
    """Lets a message through the first time only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


@contextlib.contextmanager
def each_warning_once():
    """Within the block, a data warning (unreadable files, duplicates, label conflicts...) is printed once.

    A pipeline loads its data in every step (train, export, benchmark, report): the same warning 4-5 times.
    """
    once = _Once()
    log.addFilter(once)
    try:
        yield
    finally:
        log.removeFilter(once)


def _listing(items) -> str:
    items = list(items)
    shown = "; ".join(items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += f"; ... and {len(items) - MAX_LISTED} more"
    return shown


def find_duplicates(keys: list[str], digests: list[bytes], labels: list[int]) -> tuple[list, list, list[int]]:
    """Group items by content digest.

    Args:
        keys: a printable name per item (a path, or ``file.h5:train_set_x[3]``).
        digests: a content hash per item.
        labels: the integer label per item.

    Returns:
        (duplicate groups, conflicting groups, group id per item); items sharing a digest share an id,
        so the splitter can keep them together.
    """
    first: dict[bytes, int] = {}
    members: dict[int, list[int]] = {}
    groups = []
    for i, digest in enumerate(digests):
        gid = first.setdefault(digest, len(first))
        groups.append(gid)
        members.setdefault(gid, []).append(i)
    duplicates, conflicts = [], []
    for idx in members.values():
        if len(idx) > 1:
            group = tuple(keys[i] for i in idx)
            duplicates.append(group)
            if len({labels[i] for i in idx}) > 1:
                conflicts.append(group)
    return duplicates, conflicts, groups
