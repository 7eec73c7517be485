"""Deduplication in stages that each scale out, the shape of datatrove's MinHash pipeline, with
exactly the result of the one-task planner it replaces (dedup.exact_duplicates, then
minhash.find_duplicates among the rest):

  index     one task per work unit (after its filter phase)      write_index
            exact: (16-byte key, row) sorted; near: per band (band key, row) sorted, documents
            without shingles left out; each with where every key prefix (PREFIX_BITS) starts
  exact     one task per partition of the key prefixes            exact_partition
            every unit's records of those prefixes, a bounded chunk of prefixes at a time:
            all but the first in input order (unit, row) of each key are duplicates
  buckets   one task per group of bands                           band_group
            per band, every unit's records a bounded chunk of prefixes at a time, exact
            duplicates left out: each document paired with the next 63 of its bucket
            (minhash.bucket_pairs, as the planner), the pairs verified by the signatures' Jaccard estimate
            (their rows read by byte range) -> edges between global document ids
  clusters  one task                                             cluster
            the edges merged block by block into clusters (union-find over the clustered documents
            only); each cluster keeps its first document; writes the drop list of every unit
            ({row: "duplicate" | "near_duplicate"})

Memory: index holds ~40 bytes per document of its unit (the band index is built a band at a time
from the signature file); exact and buckets hold `max_records` records (plus, in buckets, a bit per
document for the exact duplicates to leave out, one chunk's candidate pairs and the signatures of
JACCARD_BATCH of them; edges are streamed out); clusters holds the clustered documents (16 bytes
each, ~63 while merging a block of edges) and the exact duplicates. What grows with the corpus is the number of
duplicates, the bitmap (N / 8 bytes) and a table of units x 1,025 prefix offsets (8 KB per unit) in
exact and buckets -- not the number of documents. A document's global id is its row plus the
documents of the units before it (`offsets`). A chunk is at least one key prefix (1/1,024 of a
band's records), so above ~100 million documents a chunk holds more than MAX_RECORDS (~12 bytes
per record over N / 1,024: 12 MB at 10^9).
"""

from __future__ import annotations

import io
import json
import os
import resource
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np

from components import storage
from components.clean import minhash
from components.clean.minhash_config import NearDedupConfig
from components.clean.paths import CleanPaths

PREFIX_BITS = 10
PREFIXES = 1 << PREFIX_BITS
EXACT = np.dtype([("hi", ">u8"), ("lo", ">u8"), ("row", "<u4")])  # the 16-byte key as two big-endian halves
BAND = np.dtype([("key", "<u8"), ("row", "<u4")])
MAX_RECORDS = 100_000  # per chunk: 2 MB of exact records, 1.2 MB of band records, whatever the corpus size
READ_THREADS = storage.S3_CONNECTIONS  # range reads in flight at once
READ_GAP = 64  # rows at most this far apart (32 KB at 128 permutations) are read in one request
READ_SPAN = 512  # of at most this many rows (256 KB): READ_THREADS requests hold ~4 MB
JACCARD_BATCH = 8_192  # candidate pairs verified at once: their signatures, 3 x 8k x 512 B
EDGE_BLOCK = 1 << 15  # near-duplicate edges read at once (512 KB)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB: VmHWM of /proc/self/status (ru_maxrss
    of a child process can carry its parent's peak across fork and exec), ru_maxrss elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _prefix_offsets(prefixes: np.ndarray) -> np.ndarray:
    """int64 (PREFIXES + 1,): where each prefix starts in records sorted by it."""
    return np.searchsorted(prefixes, np.arange(PREFIXES + 1, dtype=np.uint64), side="left").astype(np.int64)


# ---- index ---------------------------------------------------------------------------------------


def write_index(index: int, keys: np.ndarray, signature_file: str | os.PathLike | None, paths: CleanPaths,
                cfg: NearDedupConfig | None) -> None:
    """The index of unit `index`: keys uint8 (documents, 16) as dedup.save_keys writes them;
    signature_file a local copy of the unit's signatures .npy, or None when near_dedup is off. The
    band index is built one band at a time from the file (a pass per band), so memory is ~40 bytes
    per document of the unit, not its 512-byte signatures."""
    n = len(keys)
    halves = np.ascontiguousarray(keys).view(">u8").reshape(n, 2) if n else np.zeros((0, 2), ">u8")
    records = np.empty(n, dtype=EXACT)
    records["hi"], records["lo"], records["row"] = halves[:, 0], halves[:, 1], np.arange(n, dtype=np.uint32)
    records = records[np.lexsort((records["row"], records["lo"], records["hi"]))]
    offsets = _prefix_offsets((records["hi"] >> np.uint64(64 - PREFIX_BITS)).astype(np.uint64))
    storage.write_bytes(paths.exact_index(index), records.tobytes())
    storage.write_bytes(paths.exact_index(index) + ".idx", offsets.astype("<i8").tobytes())
    del records
    if signature_file is None or cfg is None:
        return
    bands, rows = cfg.bands_rows()
    live_mask = [block[:, 0] != minhash.EMPTY for block in minhash.signature_blocks(signature_file)]
    live = np.flatnonzero(np.concatenate(live_mask)) if live_mask else np.zeros(0, dtype=np.int64)
    index_rows, start = [], 0
    with storage.open_write(paths.band_index(index)) as out:
        for band in range(bands):
            parts = [minhash._band_keys(block[:, band * rows:(band + 1) * rows][mask])
                     for block, mask in zip(minhash.signature_blocks(signature_file), live_mask)]  # fmt: skip
            keys_b = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
            order = np.lexsort((live, keys_b))
            block = np.empty(len(live), dtype=BAND)
            block["key"], block["row"] = keys_b[order], live[order]
            out.write(block.tobytes())
            index_rows.append(start + _prefix_offsets(block["key"] >> np.uint64(64 - PREFIX_BITS)))
            start += len(block)
    storage.write_bytes(paths.band_index(index) + ".idx", np.stack(index_rows).astype("<i8").tobytes())


class _InThread:
    """ThreadPoolExecutor.map in the calling thread."""

    def map(self, fn, *items):
        return map(fn, *items)

    def __enter__(self) -> "_InThread":
        return self

    def __exit__(self, *exc) -> None:
        return None


def _read_pool(uri: str) -> ThreadPoolExecutor | _InThread:
    """READ_THREADS threads for range reads on S3 (storage's client pool holds as many
    connections); on a local disk a read has no latency to hide, and each thread would keep a
    malloc arena (+20 MiB peak RSS measured at 10^6 documents), so reads stay in this thread."""
    return ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dedup-read") if storage.is_s3(uri) else _InThread()


def _chunks(counts: np.ndarray, lo: int, hi: int, max_records: int) -> Iterator[tuple[int, int]]:
    """Runs [a, b) of prefixes in [lo, hi) holding at most max_records records (one prefix alone may hold more)."""
    a, total = lo, 0
    for p in range(lo, hi):
        if total and total + counts[p] > max_records:
            yield a, p
            a, total = p, 0
        total += int(counts[p])
    if a < hi:
        yield a, hi


def _read_records(uri: str, dtype: np.dtype, start: int, stop: int) -> np.ndarray:
    return np.frombuffer(storage.read_range(uri, start * dtype.itemsize, (stop - start) * dtype.itemsize), dtype=dtype)


def _unit_offsets(uri: str, band: int | None) -> np.ndarray:
    if band is None:
        return np.frombuffer(storage.read_bytes(uri + ".idx"), dtype="<i8")
    width = (PREFIXES + 1) * 8
    return np.frombuffer(storage.read_range(uri + ".idx", band * width, width), dtype="<i8")


def _offset_table(pool: "ThreadPoolExecutor | _InThread", uris: list[str], band: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (units, PREFIXES + 1): where each prefix starts in each unit's index `uris` (of `band`
    for band indexes), int64 (PREFIXES,): the records of each prefix over all units)."""
    if not uris:
        return np.zeros((0, PREFIXES + 1), np.int64), np.zeros(PREFIXES, np.int64)
    table = np.stack(list(pool.map(lambda uri: _unit_offsets(uri, band), uris)))
    return table, (table[:, 1:] - table[:, :-1]).sum(axis=0)


def _read_chunk(pool: "ThreadPoolExecutor | _InThread", uris: list[str], dtype: np.dtype, table: np.ndarray,
                a: int, b: int) -> list[np.ndarray]:
    """Every unit's records of prefixes [a, b), a range read per unit."""
    return list(pool.map(lambda u: _read_records(uris[u], dtype, int(table[u, a]), int(table[u, b])), range(len(uris))))


def partition_bounds(partitions: int) -> list[tuple[int, int]]:
    """The prefix range [lo, hi) of each of `partitions` exact partitions (contiguous, near-equal)."""
    cuts = [round(i * PREFIXES / partitions) for i in range(partitions + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(partitions) if cuts[i] < cuts[i + 1]]


def _save_pairs(uri: str, pairs: np.ndarray, extra: dict) -> None:
    buffer = io.BytesIO()
    np.save(buffer, pairs.astype(np.int64).reshape(-1, 2), allow_pickle=False)
    storage.write_bytes(uri, buffer.getvalue())
    storage.write_text(minhash.sidecar_uri(uri), json.dumps(extra) + "\n")


def _load_pairs(uri: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)


# ---- exact ---------------------------------------------------------------------------------------


def exact_partition(part: int, partitions: int, units: int, paths: CleanPaths, max_records: int = MAX_RECORDS) -> dict:
    """Exact duplicates among the keys of partition `part`: writes paths.exact_drops(part), (unit, row)
    int64 (m, 2); returns {"duplicates", "records", "peak_rss_mb"}."""
    lo, hi = partition_bounds(partitions)[part]
    with _read_pool(paths.work) as pool:
        uris = [paths.exact_index(u) for u in range(units)]
        offsets, counts = _offset_table(pool, uris, None)
        drops, seen = [], 0
        for a, b in _chunks(counts, lo, hi, max_records):
            blocks = _read_chunk(pool, uris, EXACT, offsets, a, b)
            unit = np.concatenate([np.full(len(x), u, dtype=np.int64) for u, x in enumerate(blocks)]) if blocks else np.zeros(0, np.int64)
            rec = np.concatenate(blocks) if blocks else np.zeros(0, EXACT)
            seen += len(rec)
            order = np.lexsort((rec["row"], unit, rec["lo"], rec["hi"]))
            hi_s, lo_s = rec["hi"][order], rec["lo"][order]
            repeat = np.zeros(len(order), dtype=bool)
            repeat[1:] = (hi_s[1:] == hi_s[:-1]) & (lo_s[1:] == lo_s[:-1])
            picked = order[repeat]
            drops.append(np.stack([unit[picked], rec["row"][picked].astype(np.int64)], axis=1))
    found = np.concatenate(drops) if drops else np.zeros((0, 2), np.int64)
    stats = {"duplicates": int(len(found)), "records": seen, "peak_rss_mb": peak_rss_mb()}
    _save_pairs(paths.exact_drops(part), found, stats)
    return stats


def _global_ids(pairs: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return offsets[pairs[:, 0]] + pairs[:, 1] if len(pairs) else np.zeros(0, np.int64)


# ---- buckets -------------------------------------------------------------------------------------


def band_groups(bands: int, groups: int) -> list[list[int]]:
    """The bands of each of `groups` band groups (contiguous; fewer groups than asked when bands < groups)."""
    groups = min(groups, bands)
    cuts = [round(i * bands / groups) for i in range(groups + 1)]
    return [list(range(cuts[i], cuts[i + 1])) for i in range(groups)]


class _SignatureRows:
    """Rows of the units' signature files, read by byte range (a file need not be on this disk),
    READ_THREADS units at a time: on S3 a read's latency, not its bytes, is what it costs."""

    def __init__(self, paths: CleanPaths, num_perm: int, pool: "ThreadPoolExecutor | _InThread"):
        self.paths, self.num_perm, self.pool, self.headers = paths, num_perm, pool, {}

    def _header(self, unit: int) -> int:
        if unit not in self.headers:
            head = io.BytesIO(storage.read_range(self.paths.signatures(unit), 0, 4096))
            minhash.npy_header(head)  # the header's end is where the rows begin
            self.headers[unit] = head.tell()
        return self.headers[unit]

    def _fill(self, out: np.ndarray, unit: int, rows: np.ndarray) -> None:
        """out[k] = row rows[k] of `unit` (rows sorted, unique); rows at most READ_GAP apart and within
        READ_SPAN of the first in one request."""
        width = self.num_perm * 4
        start, base = 0, self._header(unit)
        while start < len(rows):
            stop = start + 1
            while stop < len(rows) and rows[stop] - rows[stop - 1] <= READ_GAP and rows[stop] - rows[start] < READ_SPAN:
                stop += 1
            first, last = int(rows[start]), int(rows[stop - 1])
            block = np.frombuffer(storage.read_range(self.paths.signatures(unit), base + first * width,
                                                     (last - first + 1) * width), dtype="<u4").reshape(-1, self.num_perm)  # fmt: skip
            out[start:stop] = block[rows[start:stop] - first]
            start = stop

    def of(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """uint32 (len(ids), num_perm): the signatures of sorted unique global ids."""
        out = np.empty((len(ids), self.num_perm), dtype=np.uint32)
        unit = np.searchsorted(offsets, ids, side="right") - 1
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(unit)) + 1, [len(ids)]]).astype(np.int64)
        runs = [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
        for _ in self.pool.map(lambda r: self._fill(out[r[0]:r[1]], int(unit[r[0]]), ids[r[0]:r[1]] - offsets[unit[r[0]]]), runs):
            pass
        return out


def band_group(group: int, groups: int, units: int, paths: CleanPaths, cfg: NearDedupConfig,
               exact_partitions: int, max_records: int = MAX_RECORDS) -> dict:
    """Verified near-duplicate pairs found in the bands of `group`: writes paths.near_edges(group),
    global ids "<i8" (m, 2) as raw rows, i < j, streamed chunk by chunk (a pair found in several of
    the group's bands is written once per band; the clustering takes each once); returns
    {"candidates", "edges", "records", "peak_rss_mb"}."""
    bands, _ = cfg.bands_rows()
    offsets = unit_offsets(paths, units)
    n_total = int(offsets[-1])
    excluded = np.zeros((n_total + 7) // 8, dtype=np.uint8)  # a bit per document: 125 MB at 10^9
    for p in range(len(partition_bounds(exact_partitions))):
        ids = _global_ids(_load_pairs(paths.exact_drops(p)), offsets)
        np.bitwise_or.at(excluded, ids >> 3, (1 << (ids & 7)).astype(np.uint8))
    candidates = seen = written = 0
    with storage.open_write(paths.near_edges(group)) as out, _read_pool(paths.work) as pool:
        signatures = _SignatureRows(paths, cfg.num_perm, pool)
        uris = [paths.band_index(u) for u in range(units)]
        for band in band_groups(bands, groups)[group]:
            index, counts = _offset_table(pool, uris, band)
            for a, b in _chunks(counts, 0, PREFIXES, max_records):
                blocks = _read_chunk(pool, uris, BAND, index, a, b)
                gid = np.concatenate([offsets[u] + x["row"].astype(np.int64) for u, x in enumerate(blocks)]) if blocks else np.zeros(0, np.int64)
                key = np.concatenate([x["key"] for x in blocks]) if blocks else np.zeros(0, np.uint64)
                del blocks
                seen += len(key)
                keep = ((excluded[gid >> 3] >> (gid & 7).astype(np.uint8)) & 1) == 0
                found = minhash.bucket_pairs(key[keep], gid[keep])
                del gid, key, keep
                if not found:
                    continue
                # within a band a pair shares one bucket, so it occurs once in a chunk
                pairs = np.concatenate(found)
                del found
                candidates += len(pairs)
                for start in range(0, len(pairs), JACCARD_BATCH):
                    batch = pairs[start:start + JACCARD_BATCH]
                    verified = batch[_jaccard(batch, offsets, signatures) >= cfg.threshold]
                    out.write(verified.astype("<i8").tobytes())
                    written += len(verified)
    stats = {"candidates": candidates, "edges": written, "records": seen, "peak_rss_mb": peak_rss_mb()}
    storage.write_text(minhash.sidecar_uri(paths.near_edges(group)), json.dumps(stats) + "\n")
    return stats


def _jaccard(pairs: np.ndarray, offsets: np.ndarray, signatures: _SignatureRows) -> np.ndarray:
    """Share of equal signature values per pair of global ids (minhash.estimated_jaccard's estimate)."""
    ids = np.unique(pairs)
    rows = signatures.of(ids, offsets)
    left, right = np.searchsorted(ids, pairs[:, 0]), np.searchsorted(ids, pairs[:, 1])
    return (rows[left] == rows[right]).mean(axis=1)


# ---- clusters ------------------------------------------------------------------------------------


def unit_offsets(paths: CleanPaths, units: int) -> np.ndarray:
    """int64 (units + 1,): the global id of each unit's first document (its staged count from the filter marker)."""
    counts = [json.loads(storage.read_text(paths.filter_marker(u)))["stats"]["kept"] for u in range(units)]
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


def _merge_labels(nodes: np.ndarray, labels: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clusters so far (sorted global ids `nodes`, each with the smallest id of its cluster in
    `labels`) joined by `edges` (global ids, (m, 2)): the new (nodes, labels). An endpoint already
    clustered stands for its cluster's label and an edge inside one cluster is left out, so the
    work is this block's edges plus a few passes over the clustered documents (~47 bytes each)."""
    flat = edges.ravel()
    rep = flat.copy()
    known = np.zeros(len(flat), dtype=bool)
    if len(nodes):
        pos = np.searchsorted(nodes, flat)
        pos[pos == len(nodes)] = 0
        known = nodes[pos] == flat
        rep[known] = labels[pos[known]]
        del pos
    new = np.unique(flat[~known])
    rep = rep.reshape(-1, 2)
    rep = rep[rep[:, 0] != rep[:, 1]]
    vertices, compact = np.unique(rep, return_inverse=True)  # sorted: index order is id order
    smallest = vertices[minhash.components_min_label(len(vertices), compact.reshape(-1, 2))]
    del rep, compact
    labels, new_labels = _relabel(labels, vertices, smallest), _relabel(new, vertices, smallest)
    at = np.searchsorted(nodes, new)  # nodes and new are sorted and disjoint
    return np.insert(nodes, at, new), np.insert(labels, at, new_labels)


def _relabel(ids: np.ndarray, vertices: np.ndarray, smallest: np.ndarray) -> np.ndarray:
    """Each of `ids` replaced by smallest[k] where it is vertices[k] (vertices sorted), else kept."""
    out = ids.copy()
    if len(vertices) and len(ids):
        at = np.searchsorted(vertices, ids)
        at[at == len(vertices)] = 0
        hit = vertices[at] == ids
        out[hit] = smallest[at[hit]]
    return out


def _edge_blocks(uri: str, block: int) -> Iterator[np.ndarray]:
    """A near-edges file (raw "<i8" rows of 2) in blocks of at most `block` edges, by byte range."""
    count = int(json.loads(storage.read_text(minhash.sidecar_uri(uri)))["edges"])
    for start in range(0, count, block):
        stop = min(count, start + block)
        data = storage.read_range(uri, start * 16, (stop - start) * 16)
        if len(data) != (stop - start) * 16:
            raise storage.StorageError(f"{uri}: {len(data) // 16 + start} edges where its sidecar says {count}; "
                                       "run the near-dedup tasks again")  # fmt: skip
        yield np.frombuffer(data, dtype="<i8").reshape(-1, 2).astype(np.int64)


def _write_drop_lists(paths: CleanPaths, offsets: np.ndarray, exact: np.ndarray, near: np.ndarray) -> None:
    """Every unit's drop list ({row: "duplicate" | "near_duplicate"}, rows ascending) from exact
    (unit, row) pairs and sorted near-duplicate global ids, a unit at a time; a row in both is a
    "duplicate"."""
    exact = exact[np.lexsort((exact[:, 1], exact[:, 0]))]
    exact_bounds = np.searchsorted(exact[:, 0], np.arange(len(offsets)))
    near_bounds = np.searchsorted(near, offsets)
    names = ("duplicate", "near_duplicate")
    for u in range(len(offsets) - 1):
        rows = np.concatenate([exact[exact_bounds[u]:exact_bounds[u + 1], 1], near[near_bounds[u]:near_bounds[u + 1]] - offsets[u]])
        reason = np.repeat(np.array([0, 1], np.int8), [exact_bounds[u + 1] - exact_bounds[u], near_bounds[u + 1] - near_bounds[u]])
        order = np.lexsort((reason, rows))
        rows, reason = rows[order], reason[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        found = {str(r): names[k] for r, k in zip(rows[first].tolist(), reason[first].tolist())}
        storage.write_text(paths.drop_list(u), json.dumps(found))


def cluster(units: int, paths: CleanPaths, exact_partitions: int, groups: int | None, edge_block: int = EDGE_BLOCK) -> dict:
    """The drop list of every unit from the exact duplicates and the near-duplicate edges (groups
    None: near_dedup off), the edges read `edge_block` at a time and merged into the clusters so far
    once at least `edge_block` and a quarter as many as the documents clustered wait (each cluster
    keeps its first document); returns {"duplicate", "near_duplicate", "edges", "clustered",
    "peak_rss_mb"} (edges: as read, a pair found in several bands counted each time)."""
    offsets = unit_offsets(paths, units)
    exact = [_load_pairs(paths.exact_drops(p)) for p in range(len(partition_bounds(exact_partitions)))]
    exact_pairs = np.concatenate(exact).astype(np.int64).reshape(-1, 2) if exact else np.zeros((0, 2), np.int64)
    del exact
    nodes = labels = np.zeros(0, np.int64)
    n_edges = waiting = 0
    pending: list[np.ndarray] = []
    for g in range(groups or 0):
        for block in _edge_blocks(paths.near_edges(g), edge_block):
            pending.append(block)
            n_edges += len(block)
            waiting += len(block)
            # a merge costs a pass over the clusters so far: merging once a quarter as many edges wait
            # keeps the time ~ 4 x edges x log(edges) and the block's temporaries (~150 bytes per
            # edge) within ~40 bytes per clustered document
            if waiting >= max(edge_block, len(nodes) // 4):
                nodes, labels = _merge_labels(nodes, labels, np.concatenate(pending))
                pending, waiting = [], 0
    if pending:
        nodes, labels = _merge_labels(nodes, labels, np.concatenate(pending))
    near, clustered = nodes[labels != nodes], len(nodes)
    del nodes, labels
    _write_drop_lists(paths, offsets, exact_pairs, near)
    figures = {"duplicate": int(len(exact_pairs)), "near_duplicate": int(len(near)), "edges": n_edges,
               "clustered": clustered, "peak_rss_mb": peak_rss_mb()}
    storage.write_text(paths.cluster_marker, json.dumps(figures) + "\n")
    return figures
