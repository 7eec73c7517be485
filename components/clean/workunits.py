"""Work units: a corpus of any number of files cut into a fixed number of tasks, balanced by size.

    units = plan_work_units(storage.list_sizes(input_uri), tasks=4)
    save_units(uri, units); load_units(uri)[i]          # the list lives on storage, not in KFP's parameters

A work unit is a run of consecutive input parts in input order (sorted file names): whole files,
or byte ranges of a plain JSONL file large enough to be cut (components/shards.py reads a range
as the lines that begin in it, as Hadoop's line reader does). Units are contiguous so that
"input order" -- which document of a duplicate pair is kept -- is the same whatever the number of
tasks: unit 0 holds the first bytes of the corpus, unit 1 the next ones. A plain JSONL file is
cut where a multiple of total / tasks bytes falls inside it; gzip, zstd and Parquet files cannot
be entered in the middle and stay whole. The pieces are then grouped in order into at most
`tasks` units with the smallest largest unit. So a corpus of 100,000 files or of 4 becomes
`tasks` units (fewer when there are fewer pieces), and the pipeline iterates over unit indices only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from components import storage
from components.shards import SPLITTABLE_SUFFIXES

MIN_RANGE_BYTES = 1 << 20  # no byte range under 1 MiB: a cut costs a request and a partial line


@dataclass(frozen=True)
class InputPart:
    """Bytes [start, end) of one input file (end None: to its end); size: the file's size."""

    uri: str
    size: int
    start: int = 0
    end: int | None = None

    @property
    def bytes(self) -> int:
        return (self.size if self.end is None else self.end) - self.start

    @property
    def whole(self) -> bool:
        return self.start == 0 and self.end is None


@dataclass(frozen=True)
class WorkUnit:
    index: int
    parts: tuple[InputPart, ...]

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)


def plan_work_units(files: list[tuple[str, int]], tasks: int, min_range_bytes: int = MIN_RANGE_BYTES) -> list[WorkUnit]:
    """`files` ((uri, size), in input order) as at most `tasks` contiguous units of about equal bytes.

    A plain JSONL file is first cut where the corpus's multiples of total / tasks bytes fall inside
    it (unless a piece would be under `min_range_bytes`); the pieces (those ranges and whole files)
    are then grouped, in order, into at most `tasks` runs whose largest is as small as it can be.
    Units are numbered 0..n-1 in order. Raises ValueError for tasks < 1."""
    if tasks < 1:
        raise ValueError(f"tasks must be at least 1, not {tasks}")
    total = sum(size for _, size in files)
    per_unit = max(total / tasks, 1.0)
    pieces: list[InputPart] = []
    offset = 0
    for uri, size in files:
        cuts = [0]
        if uri.endswith(SPLITTABLE_SUFFIXES):
            for k in range(1, tasks):
                cut = math.ceil(k * per_unit) - offset
                if cut - cuts[-1] >= min_range_bytes and size - cut >= min_range_bytes:
                    cuts.append(cut)
        pieces += [InputPart(uri, size, a, None if b == size else b) for a, b in zip(cuts, cuts[1:] + [size])]
        offset += size
    groups = _linear_partition([p.bytes for p in pieces], tasks)
    return [WorkUnit(i, tuple(pieces[a:b])) for i, (a, b) in enumerate(groups)]


def _linear_partition(sizes: list[int], k: int) -> list[tuple[int, int]]:
    """Runs [a, b) of `sizes`, in order, at most k of them, whose largest sum is the smallest
    possible (binary search on that bound, filling each run greedily)."""
    if not sizes:
        return []

    def runs(bound: int) -> list[tuple[int, int]]:
        out, start, load = [], 0, 0
        for i, size in enumerate(sizes):
            if load and load + size > bound:
                out.append((start, i))
                start, load = i, 0
            load += size
        return out + [(start, len(sizes))]

    low, high = max(sizes), sum(sizes)
    while low < high:
        mid = (low + high) // 2
        if len(runs(mid)) <= k:
            high = mid
        else:
            low = mid + 1
    return runs(low)


def save_units(uri: str, units: list[WorkUnit]) -> None:
    """The plan as JSON on storage: {"units": [{"index", "parts": [{uri, size, start, end}]}]}."""
    data = {"units": [{"index": u.index, "parts": [asdict(p) for p in u.parts]} for u in units],
            "files": len({p.uri for u in units for p in u.parts}), "bytes": sum(u.bytes for u in units)}  # fmt: skip
    storage.write_text(uri, json.dumps(data) + "\n")


def load_units(uri: str) -> list[WorkUnit]:
    data = json.loads(storage.read_text(uri))
    return [WorkUnit(u["index"], tuple(InputPart(**p) for p in u["parts"])) for u in data["units"]]
