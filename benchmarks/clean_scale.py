"""The clean step at 10^5 and 10^6 documents, one process per task, against datatrove's MinHash dedup.

    python -m benchmarks.clean_scale [--quick] [--sizes 100000 1000000] [--peers default chars aligned] [--append]
    python -m benchmarks.run --only scale [--quick]          (make bench runs it too)

Corpora: benchmarks/synthetic_corpus.py (seed 0; 5 % exact copies in clusters of 2-5, 10 % near
copies in clusters of 2-20), built once under --work (kept between runs).

homegrown: `CleanConfig(langid=None, quality=None, pii=None)` -- NFC normalise, mojibake fix,
length, exact dedup, MinHash near dedup at its defaults (128 permutations, 32 bands x 4 rows,
threshold 0.5, character 4-grams, 3-grams for Han/Japanese) -- with `tasks = N / DOCS_PER_UNIT`
and `dedup_tasks = N / DOCS_PER_DEDUP_TASK`, so a task holds about the same number of documents
at every N. Every task is its own process, as a KFP pod would be: plan, filter (per unit),
exact (per key-prefix partition), near (per band group), cluster, write (per unit), collect;
`--workers` of them at a time (2: this machine's cores).

datatrove 0.10.1 (in .venv-bench): MinhashDedupSignature (per unit: JsonlReader over the same
files, `tasks` ranks), MinhashDedupBuckets (num_buckets x ceil(groups / num_buckets) ranks: it
needs a multiple of num_buckets), MinhashDedupCluster (1), MinhashDedupFilter (per unit, writing
the kept documents); each rank its own process through the executor's `_run_for_rank`.
  default   MinhashConfig() as shipped: word 5-grams (English word tokenizer), 14 buckets x 8
            hashes, 64-bit xxhash.
  aligned   (10^5 and below) the closest datatrove allows to our shingling: `get_shingles`
            overridden to character 4-grams of datatrove's simplified text (lower case, no
            punctuation) with spaces removed, 32 buckets x 4 hashes (our LSH). What still differs: one n for every script
            (we use 3 for Han/Japanese), and datatrove takes every bucket collision as a duplicate
            (no Jaccard check of candidates, where we verify each pair at threshold 0.5); it also
            has no exact-dedup stage here (identical texts collide in every bucket).
  chars     the same character 4-grams with datatrove's default 14 buckets x 8 hashes (its own
            LSH threshold, ~0.72), to separate the shingling from the missing verification.

Measured per task: wall seconds, CPU seconds (os.wait4 on the task's process) and peak RSS (the
task's VmHWM, see `vm_hwm_mb`); per task type the maximum. Recall and precision are cluster-level
against the generator's truth (`score`). Writes benchmarks/results/scale.json (scale-quick.json with --quick) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import synthetic_corpus

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS_PER_UNIT = 25_000  # clean.tasks = N / this
DOCS_PER_DEDUP_TASK = 50_000  # clean.dedup_tasks = N / this (exact partitions; band groups up to 32 bands)
ALIGNED_MAX_DOCS = 100_000  # the `aligned` peer runs at this size and below
_ID = re.compile(rb'"id":\s*"doc-(\d+)"')


# ---- tasks (each runs in its own process: python -m benchmarks.clean_scale task ...) ----------------


def _homegrown_task(phase: str, corpus: str, output: str, config_path: str, index: int) -> dict:
    from components.clean import clean, dedup_stages
    from components.clean.config import CleanConfig
    from components.clean.paths import CleanPaths
    from components.clean.workunits import load_units

    config = CleanConfig.model_validate_json(Path(config_path).read_text())
    paths = CleanPaths.of(output, config)
    started = time.perf_counter()
    if phase == "plan":
        return {"units": len(clean.plan_units(corpus, output, config)), "seconds": time.perf_counter() - started}
    units = len(load_units(paths.units))
    near = config.near_dedup
    groups = len(dedup_stages.band_groups(near.bands_rows()[0], config.dedup_tasks)) if near is not None else None
    if phase == "filter":
        out: dict = {"records_in": clean.filter_shard(index, output, config).records_in}
    elif phase == "exact":
        out = dedup_stages.exact_partition(index, config.dedup_tasks, units, paths)
    elif phase == "near":
        out = dedup_stages.band_group(index, groups, units, paths, near, config.dedup_tasks)
    elif phase == "cluster":
        out = dedup_stages.cluster(units, paths, config.dedup_tasks, groups)
    elif phase == "write":
        written = clean.write_shard(index, output, config)
        out = {"kept": sum(s["records"] for s in written["shards"]), "dropped": written["dropped"]}
    elif phase == "collect":
        result = clean.collect(corpus, output, units, config)
        out = {"stats": result.stats.model_dump(), "tasks": result.tasks}
    else:
        raise ValueError(f"unknown phase {phase!r}")
    return {**out, "seconds": time.perf_counter() - started}


def _char_signature(output: str, config, n: int):
    """datatrove's MinhashDedupSignature with character n-grams (spaces removed) for its word n-grams."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature
    from datatrove.utils.text import simplify_text

    class CharSignature(MinhashDedupSignature):
        def get_shingles(self, text: str) -> np.ndarray:
            chars = simplify_text(text, self.config.norm_config).replace(" ", "")
            grams = {chars[i:i + n] for i in range(max(1, len(chars) - n + 1))} if chars else set()
            return np.fromiter((self._hash_func(g) for g in grams), dtype=np.uint64).reshape((-1, 1))

    return CharSignature(output, config=config)


def _datatrove_config(peer: str):
    from datatrove.pipeline.dedup.minhash import MinhashConfig

    return MinhashConfig(num_buckets=32, hashes_per_bucket=4) if peer == "aligned" else MinhashConfig()


def _datatrove_task(peer: str, stage: str, corpus: str, work: str, rank: int, world: int) -> dict:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    config = _datatrove_config(peer)
    d = lambda name: os.path.join(work, name)  # noqa: E731
    reader = lambda: JsonlReader(corpus, glob_pattern="*.jsonl")  # noqa: E731
    if stage == "signatures":
        step = MinhashDedupSignature(d("sigs"), config=config) if peer == "default" else _char_signature(d("sigs"), config, 4)
        pipeline = [reader(), step]
    elif stage == "buckets":
        pipeline = [MinhashDedupBuckets(d("sigs"), d("buckets"), config=config)]
    elif stage == "cluster":
        pipeline = [MinhashDedupCluster(d("buckets"), d("remove"), config=config)]
    elif stage == "filter":
        pipeline = [reader(), MinhashDedupFilter(d("remove")), JsonlWriter(d("final"))]
    else:
        raise ValueError(f"unknown stage {stage!r}")
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=world, workers=1, logging_dir=d(f"logs/{stage}"), skip_completed=False)
    started = time.perf_counter()
    executor._run_for_rank(rank)  # one rank in this process, as one task of a cluster's job array
    return {"seconds": time.perf_counter() - started}


# ---- running tasks as processes -------------------------------------------------------------------


def vm_hwm_mb() -> float:
    """This process's peak resident memory in MiB, from /proc/self/status (VmHWM).

    Not getrusage's ru_maxrss: Linux carries the parent's RSS at fork into the child's ru_maxrss
    across exec, so every task started by a 300 MiB driver would report at least 300 MiB. VmHWM
    belongs to the address space exec created."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_tasks(kind: str, commands: list[list[str]], workers: int, log: Path) -> list[dict]:
    """Each command in its own process, `workers` at a time; per task: wall and CPU seconds, peak
    RSS (MiB, from os.wait4) and what the task printed as its last line (JSON). Raises
    RuntimeError naming the log when a task fails."""
    pending = list(enumerate(commands))
    running: dict[int, tuple[int, subprocess.Popen, float]] = {}
    done: dict[int, dict] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    with open(log, "a") as err:
        while pending or running:
            while pending and len(running) < workers:
                index, command = pending.pop(0)
                out = open(log.with_suffix(f".{kind}-{index}.out"), "w+b")  # a file, not a pipe: no deadlock on chatter
                proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT, env=env)
                proc.stdout = out
                running[proc.pid] = (index, proc, time.perf_counter())
            pid, status, usage = os.wait4(-1, 0)
            if pid not in running:
                continue
            index, proc, began = running.pop(pid)
            proc.returncode = os.waitstatus_to_exitcode(status)
            proc.stdout.seek(0)
            lines = proc.stdout.read().decode().strip().splitlines()
            proc.stdout.close()
            os.unlink(proc.stdout.name)
            if proc.returncode != 0:
                raise RuntimeError(f"{kind} task {index} failed (exit {proc.returncode}); see {log}")
            result = json.loads(lines[-1]) if lines else {}
            done[index] = {"task": kind, "index": index, "wall_s": time.perf_counter() - began,
                           "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": result.pop("vm_hwm_mb"),
                           "ru_maxrss_mb": usage.ru_maxrss / 1024, "result": result}  # fmt: skip
    return [done[i] for i in range(len(commands))]


def _me(*args: object) -> list[str]:
    return [sys.executable, "-m", "benchmarks.clean_scale", "task", *map(str, args)]


def run_homegrown(corpus: Path, work: Path, docs: int, workers: int) -> dict:
    from components.clean import dedup_stages
    from components.clean.config import CleanConfig

    tasks, dedup_tasks = max(1, docs // DOCS_PER_UNIT), max(1, docs // DOCS_PER_DEDUP_TASK)
    config = CleanConfig(langid=None, quality=None, pii=None, tasks=tasks, dedup_tasks=dedup_tasks, workers=1)
    output = work / "homegrown"
    if output.exists():
        import shutil

        shutil.rmtree(output)
    output.mkdir(parents=True)
    config_path = work / "homegrown-config.json"
    config_path.write_text(config.model_dump_json())
    log = work / "homegrown.log"
    partitions = len(dedup_stages.partition_bounds(dedup_tasks))
    groups = len(dedup_stages.band_groups(config.near_dedup.bands_rows()[0], dedup_tasks))
    common = (corpus / "docs", output, config_path)
    started = time.perf_counter()
    ran = run_tasks("plan", [_me("homegrown", "plan", *common, 0)], 1, log)
    units = ran[0]["result"]["units"]
    ran += run_tasks("filter", [_me("homegrown", "filter", *common, i) for i in range(units)], workers, log)
    ran += run_tasks("exact", [_me("homegrown", "exact", *common, p) for p in range(partitions)], workers, log)
    ran += run_tasks("near", [_me("homegrown", "near", *common, g) for g in range(groups)], workers, log)
    ran += run_tasks("cluster", [_me("homegrown", "cluster", *common, 0)], 1, log)
    ran += run_tasks("write", [_me("homegrown", "write", *common, i) for i in range(units)], workers, log)
    ran += run_tasks("collect", [_me("homegrown", "collect", *common, 0)], 1, log)
    seconds = time.perf_counter() - started
    kept = _kept_ids(sorted((output / "shards").glob("*.jsonl.gz")))
    return {"tool": "homegrown", "tasks": tasks, "dedup_tasks": dedup_tasks, "units": units, "partitions": partitions,
            "groups": groups, "seconds": seconds, "ran": ran, "kept": kept, "sizes": _work_sizes(output),
            "stats": ran[-1]["result"]["stats"]}  # fmt: skip


def _work_sizes(output: Path) -> dict[str, int]:
    """Bytes on storage per kind of work file (index, signatures, keys, edges, drop lists, staged, final)."""
    kinds = {".exact.bin": "exact_index", ".bands.bin": "band_index", ".minhash.npy": "signatures", ".keys.npy": "keys",
             ".jsonl.gz": "staged", ".bin.idx": "index_offsets"}  # fmt: skip
    sizes: dict[str, int] = {}
    for path in output.rglob("*"):
        if not path.is_file():
            continue
        name = path.name
        if "shards" in path.parts:
            kind = "final_shards"
        elif name.startswith("exact-") and name.endswith(".npy"):
            kind = "exact_drops"
        elif name.startswith("near-") and name.endswith(".bin"):
            kind = "near_edges"
        elif "dedup" in path.parts and name.startswith("part-"):
            kind = "drop_lists"
        else:
            kind = next((k for suffix, k in kinds.items() if name.endswith(suffix)), "other")
        sizes[kind] = sizes.get(kind, 0) + path.stat().st_size
    return sizes


def run_datatrove(peer: str, corpus: Path, work: Path, docs: int, workers: int) -> dict:
    tasks = max(1, docs // DOCS_PER_UNIT)
    buckets = _datatrove_config(peer).num_buckets
    from components.clean import dedup_stages
    from components.clean.minhash_config import NearDedupConfig

    groups = len(dedup_stages.band_groups(NearDedupConfig().bands_rows()[0], max(1, docs // DOCS_PER_DEDUP_TASK)))
    bucket_tasks = buckets * math.ceil(groups / buckets)
    out = work / f"datatrove-{peer}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    log = work / f"datatrove-{peer}.log"
    docs_dir = corpus / "docs"
    started = time.perf_counter()
    ran = run_tasks("signatures", [_me("datatrove", peer, "signatures", docs_dir, out, r, tasks) for r in range(tasks)], workers, log)
    ran += run_tasks("buckets", [_me("datatrove", peer, "buckets", docs_dir, out, r, bucket_tasks) for r in range(bucket_tasks)], workers, log)
    ran += run_tasks("cluster", [_me("datatrove", peer, "cluster", docs_dir, out, 0, 1)], 1, log)
    ran += run_tasks("filter", [_me("datatrove", peer, "filter", docs_dir, out, r, tasks) for r in range(tasks)], workers, log)
    seconds = time.perf_counter() - started
    kept = _kept_ids(sorted((out / "final").glob("*.jsonl.gz")))
    sig_bytes = sum(p.stat().st_size for p in (out / "sigs").rglob("*") if p.is_file())
    return {"tool": f"datatrove-{peer}", "tasks": tasks, "bucket_tasks": bucket_tasks, "seconds": seconds, "ran": ran,
            "kept": kept, "sizes": {"signatures": sig_bytes}}  # fmt: skip


def _kept_ids(files: list[Path]) -> np.ndarray:
    import gzip

    ids = []
    for path in files:
        with gzip.open(path, "rb") as f:
            ids.extend(int(m.group(1)) for m in _ID.finditer(f.read()))
    return np.array(ids, dtype=np.int64)


# ---- scoring ----------------------------------------------------------------------------------------


def score(kept: np.ndarray, cluster: np.ndarray, kind: np.ndarray) -> dict:
    """Cluster-level recall and precision of the dropped documents, whichever member a tool keeps.

    A truth cluster of size s (an original and its copies) should lose s - 1 documents. Correct
    drops: sum over clusters of min(dropped in it, s - 1); recall = correct / sum(s - 1); precision
    = correct / all dropped (a unique document dropped, or a cluster dropped whole, is a false drop).
    Split by cluster kind: exact clusters (byte-identical copies) and near clusters (edited copies)."""
    n = len(cluster)
    dropped = np.ones(n, dtype=bool)
    dropped[kept] = False
    size = np.bincount(cluster)
    lost = np.bincount(cluster, weights=dropped, minlength=len(size)).astype(np.int64)
    should = np.maximum(size - 1, 0)
    correct = np.minimum(lost, should)
    cluster_kind = np.zeros(len(size), dtype=np.int8)
    np.maximum.at(cluster_kind, cluster, kind)
    out = {"docs": n, "kept": int(len(kept)), "dropped": int(dropped.sum()), "should_drop": int(should.sum()),
           "recall": float(correct.sum() / max(1, should.sum())), "precision": float(correct.sum() / max(1, dropped.sum())),
           "unique_dropped": int(lost[size == 1].sum()), "clusters_dropped_whole": int(((lost == size) & (size > 1)).sum())}  # fmt: skip
    for name, code in (("exact", 1), ("near", 2)):
        mask = cluster_kind == code
        out[f"recall_{name}"] = float(correct[mask].sum() / max(1, should[mask].sum()))
    return out


# ---- the benchmark ------------------------------------------------------------------------------------


def summarise(run: dict, truth: tuple[np.ndarray, np.ndarray], docs: int, workers: int) -> dict:
    by_type: dict[str, list[dict]] = {}
    for task in run["ran"]:
        by_type.setdefault(task["task"], []).append(task)
    types = {
        name: {"count": len(items), "rss_mb_max": max(t["rss_mb"] for t in items), "wall_s_sum": sum(t["wall_s"] for t in items),
               "cpu_s_sum": sum(t["cpu_s"] for t in items), "wall_s_max": max(t["wall_s"] for t in items)}
        for name, items in by_type.items()
    }  # fmt: skip
    cpu = sum(t["cpu_s"] for t in run["ran"])
    row = {k: v for k, v in run.items() if k not in ("ran", "kept")}
    row["bytes_per_doc"] = {k: v / docs for k, v in run.get("sizes", {}).items()}
    row.update(docs=docs, workers=workers, docs_per_s=docs / run["seconds"], docs_per_s_per_core=docs / run["seconds"] / workers,
               cpu_s=cpu, docs_per_cpu_s=docs / cpu, task_types=types, score=score(run["kept"], *truth),
               tasks_detail=[{k: v for k, v in t.items() if k != "result"} | {"result": _small(t["result"])} for t in run["ran"]])  # fmt: skip
    return row


def _small(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in ("stats",)}


def corpus_for(work: Path, docs: int, workers: int) -> tuple[Path, dict]:
    path = work / f"corpus-{docs}"
    meta = path / "corpus.json"
    if meta.exists() and json.loads(meta.read_text())["docs"] == docs:
        return path, json.loads(meta.read_text())
    print(f"[scale] generating {docs:,} documents under {path}", flush=True)
    return path, synthetic_corpus.generate(path, docs, workers=workers)


def table(rows: list[dict]) -> str:
    head = (f"{'N':>9} {'tool':<20} {'tasks':>11} {'wall s':>7} {'docs/s/core':>11} {'docs/CPU-s':>10} {'recall':>7} {'exact':>6} {'near':>6} "
            f"{'precis.':>7}  peak RSS MiB per task type (max over tasks; count)")  # fmt: skip
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["score"]
        tasks = f"{r['tasks']}/{r.get('dedup_tasks', r.get('bucket_tasks'))}"
        rss = "  ".join(f"{name} {t['rss_mb_max']:.0f} ({t['count']})" for name, t in r["task_types"].items())
        lines.append(f"{r['docs']:>9,} {r['tool']:<20} {tasks:>11} {r['seconds']:>7.1f} {r['docs_per_s_per_core']:>11,.0f} {r['docs_per_cpu_s']:>10,.0f} "
                     f"{s['recall']:>7.4f} {s['recall_exact']:>6.3f} {s['recall_near']:>6.3f} {s['precision']:>7.4f}  {rss}")  # fmt: skip
    return "\n".join(lines)


def main(quick: bool = False, sizes: list[int] | None = None, peers: tuple[str, ...] = ("default", "chars", "aligned"),
         workers: int = 2, work: Path | None = None, output: Path | None = None, append: bool = False,
         homegrown: bool = True) -> dict:
    sizes = sizes or ([100_000] if quick else [100_000, 1_000_000])
    work = work or Path(os.environ.get("SCALE_WORK", "/tmp/homegrown-scale"))
    output = output or RESULTS / ("scale-quick.json" if quick else "scale.json")
    have_datatrove = _has("datatrove")
    if not have_datatrove:
        print("[scale] datatrove is not installed here (run in .venv-bench): homegrown rows only", flush=True)
    rows: list[dict] = []
    corpora: dict = {}
    if append and output.exists():
        old = json.loads(output.read_text())
        rerun = {(d, t) for d in sizes for t in (["homegrown"] if homegrown else []) + [f"datatrove-{p}" for p in peers]}
        rows = [r for r in old["rows"] if (r["docs"], r["tool"]) not in rerun]
        corpora = {int(k): v for k, v in old["corpora"].items()}
    for docs in sizes:
        corpus, meta = corpus_for(work, docs, workers)
        corpora[docs] = meta
        truth = synthetic_corpus.read_truth(corpus)
        if homegrown:
            print(f"[scale] {docs:,} documents: homegrown", flush=True)
            rows.append(summarise(run_homegrown(corpus, work / f"run-{docs}", docs, workers), truth, docs, workers))
            print(table(rows[-1:]), flush=True)
            _save(output, rows, corpora, workers)
        for peer in peers if have_datatrove else ():
            if peer == "aligned" and docs > ALIGNED_MAX_DOCS:
                continue  # its precision (~0.5: no verification) is the point, and 10^5 shows it
            print(f"[scale] {docs:,} documents: datatrove {peer}", flush=True)
            rows.append(summarise(run_datatrove(peer, corpus, work / f"run-{docs}", docs, workers), truth, docs, workers))
            print(table(rows[-1:]), flush=True)
            _save(output, rows, corpora, workers)
    rows.sort(key=lambda r: (r["docs"], r["tool"] != "homegrown", r["tool"]))
    printed = table(rows)
    print(printed)
    return _save(output, rows, corpora, workers)


def _save(output: Path, rows: list[dict], corpora: dict, workers: int) -> dict:
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
              "versions": _versions(), "workers": workers, "docs_per_unit": DOCS_PER_UNIT,
              "docs_per_dedup_task": DOCS_PER_DEDUP_TASK, "corpora": corpora, "rows": rows, "table": table(rows)}  # fmt: skip
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("homegrown", "datatrove", "numpy", "xxhash"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _cli(argv: list[str]) -> None:
    if argv and argv[0] == "task":
        tool = argv[1]
        if tool == "homegrown":
            phase, corpus, output, config_path, index = argv[2:7]
            result = _homegrown_task(phase, corpus, output, config_path, int(index))
        else:
            peer, stage, corpus, work, rank, world = argv[2:8]
            result = _datatrove_task(peer, stage, corpus, work, int(rank), int(world))
        print(json.dumps({**result, "vm_hwm_mb": vm_hwm_mb()}, default=str))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^5 documents only")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--peers", nargs="*", default=["default", "chars", "aligned"], choices=("default", "aligned", "chars"),
                        help="datatrove variants (aligned: at 10^5 documents and below only)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="corpora and runs (default $SCALE_WORK or /tmp/homegrown-scale)")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--append", action="store_true", help="keep the output's rows of other (N, tool) pairs")
    parser.add_argument("--no-homegrown", action="store_true", help="peers only")
    args = parser.parse_args(argv)
    main(args.quick, args.sizes, tuple(args.peers), args.workers, args.work, args.output, args.append, not args.no_homegrown)


if __name__ == "__main__":
    _cli(sys.argv[1:])
