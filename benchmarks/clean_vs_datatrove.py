"""Benchmark: the homegrown clean step against datatrove 0.10.1 on the demo corpus.

Every run is its own subprocess (`benchmarks._clean_job`), timed from inside (imports excluded)
and watched from outside for memory: peak RSS of the largest single process (getrusage in the
job, plus sampling) and peak RSS summed over the whole process tree (psutil, every 20 ms).

Corpora, built in a temp dir from data/demo-corpus/part-000*.jsonl:
  x1   the demo corpus as is (4 files, 10,937 records): the like-for-like run
  x5   5 copies (20 files); copy k's ids get a "-cK" suffix, the text is unchanged, so 4/5 of
       the records are exact duplicates. Both tools still read, filter and hash every copy; kept
       counts must equal x1's (a correctness check). Used for throughput / memory scaling.
  x10  10 copies, homegrown only, workers=1: memory flatness against x1.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo-corpus"
RESULTS = ROOT / "benchmarks" / "results"
ZH = ("zh", "zh-Hant")

LABELS = {
    "homegrown": "homegrown (normalise+quality+exact+near; langid, PII off)",
    "homegrown-full": "homegrown (full defaults: + langid + PII)",
    "datatrove": "datatrove (FTFY+Gopher rep+Gopher qual+C4+FineWeb, exact+MinHash)",
    "datatrove-aligned": "datatrove, min words 10 (Gopher 50->10, C4 5-sentence rule off)",
}


def build_corpus(directory: Path, copies: int) -> dict:
    """`copies` copies of the demo corpus as separate files; returns record counts by lang_hint."""
    directory.mkdir(parents=True, exist_ok=True)
    sources = sorted(DEMO.glob("part-000*.jsonl"))
    if not sources:
        raise SystemExit(f"no demo corpus under {DEMO}: run `make corpus` first")
    langs: Counter = Counter()
    for k in range(copies):
        for src in sources:
            out = directory / f"c{k:02d}-{src.name}"
            # binary: records split on b"\n" only (text mode also splits at a \r, JSON whitespace)
            with src.open("rb") as fin, out.open("w", encoding="utf-8") as fout:
                for line in fin:
                    if not line.strip():
                        continue
                    record = json.loads(line)
                    if k:
                        record["id"] = f"{record['id']}-c{k}"
                    langs[record.get("lang_hint", "?")] += 1
                    fout.write(json.dumps(record, ensure_ascii=False) + "\n")
    return {"records": sum(langs.values()), "by_lang_hint": dict(langs), "files": copies * len(sources)}


def measure(tool: str, corpus: Path, workers: int, scratch: Path) -> dict:
    """Run one job in a subprocess; wall time, peak RSS (largest process and tree), kept counts."""
    work = Path(tempfile.mkdtemp(prefix=f"{tool}-w{workers}-", dir=scratch))
    result_path = work / "result.json"
    log_path = work / "job.log"
    cmd = [sys.executable, "-m", "benchmarks._clean_job", tool, str(corpus), str(work / "run"), str(workers), str(result_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "DATATROVE_COLORIZE_LOGS": "0"}
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = psutil.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        peak_tree = peak_single = 0
        while proc.poll() is None:
            try:
                procs = [proc, *proc.children(recursive=True)]
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
                peak_tree = max(peak_tree, sum(rss))
                peak_single = max(peak_single, max(rss, default=0))
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.02)
    process_seconds = time.perf_counter() - started
    if proc.returncode != 0 or not result_path.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{tool} workers={workers} on {corpus} failed (rc={proc.returncode}):\n{tail}")
    job = json.loads(result_path.read_text())
    shutil.rmtree(work / "run", ignore_errors=True)
    mib = 1024 * 1024
    largest = max(job["maxrss_self_kib"] * 1024, job["maxrss_children_kib"] * 1024, peak_single)
    return {
        "tool": tool, "workers": workers, "seconds": round(job["seconds"], 3),
        "process_seconds": round(process_seconds, 3),
        "peak_rss_largest_mib": round(largest / mib, 1), "peak_rss_tree_mib": round(peak_tree / mib, 1),
        "kept": job["kept"], "kept_by_lang_hint": job["kept_by_lang_hint"],
        **({"dropped": job["dropped"]} if "dropped" in job else {}),
    }


def _row(run: dict, corpus: dict) -> dict:
    n = corpus["records"]
    by_lang = corpus["by_lang_hint"]
    kept = run["kept_by_lang_hint"]
    zh_in = by_lang.get("zh", 0)
    zhall_in = sum(by_lang.get(l, 0) for l in ZH)
    return {
        **run,
        "docs_in": n,
        "docs_per_s": round(n / run["seconds"], 1),
        "docs_per_s_per_core": round(n / run["seconds"] / run["workers"], 1),
        "kept_share": round(run["kept"] / n, 4),
        # every copy is kept at most once, so shares are against one copy's count
        "zh_kept": kept.get("zh", 0),
        "zh_kept_share": round(kept.get("zh", 0) / (zh_in / corpus["copies"]), 4) if zh_in else None,
        "zh_all_kept_share": round(sum(kept.get(l, 0) for l in ZH) / (zhall_in / corpus["copies"]), 4) if zhall_in else None,
        "en_kept_share": round(kept.get("en", 0) / (by_lang.get("en", 1) / corpus["copies"]), 4),
    }


def plan(quick: bool) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Corpora (name -> copies) and runs (corpus, tool, workers)."""
    if quick:
        corpora = {"x1": 1, "x3": 3}
        runs = [("x1", "homegrown", 1), ("x1", "homegrown-full", 1), ("x1", "datatrove", 1),
                ("x1", "datatrove-aligned", 1), ("x3", "homegrown", 1)]
        return corpora, runs
    corpora = {"x1": 1, "x5": 5, "x10": 10}
    runs = []
    for w in (1, 2):
        runs += [("x1", "homegrown", w), ("x1", "homegrown-full", w), ("x1", "datatrove", w)]
    runs += [("x1", "datatrove-aligned", 1)]
    for w in (1, 2):
        runs += [("x5", "homegrown", w), ("x5", "datatrove", w)]
    runs += [("x10", "homegrown", 1)]
    return corpora, runs


def format_table(rows: list[dict]) -> str:
    head = (f"{'corpus':6} {'tool':66} {'w':>1} {'docs':>7} {'s':>7} {'docs/s/core':>11} {'ratio':>6} "
            f"{'RSS MiB':>8} {'tree MiB':>8} {'kept':>6} {'zh kept':>8} {'zh*kept':>8} {'en kept':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = f"{r['ratio_vs_datatrove']:.2f}" if r.get("ratio_vs_datatrove") else ""
        pct = lambda v: f"{100 * v:.1f}%" if v is not None else "-"  # noqa: E731
        lines.append(
            f"{r['corpus']:6} {LABELS[r['tool']][:66]:66} {r['workers']:>1} {r['docs_in']:>7} {r['seconds']:>7.2f} "
            f"{r['docs_per_s_per_core']:>11.0f} {ratio:>6} {r['peak_rss_largest_mib']:>8.0f} {r['peak_rss_tree_mib']:>8.0f} "
            f"{r['kept']:>6} {pct(r['zh_kept_share']):>8} {pct(r['zh_all_kept_share']):>8} {pct(r['en_kept_share']):>8}"
        )
    return "\n".join(lines)


def main(quick: bool = False, output: Path | None = None) -> dict:
    corpora_plan, runs = plan(quick)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bench-clean-"))
    try:
        corpora = {}
        for name, copies in corpora_plan.items():
            corpora[name] = {**build_corpus(scratch / "corpora" / name, copies), "copies": copies}
        rows = []
        for corpus_name, tool, workers in runs:
            print(f"bench: {corpus_name} {tool} workers={workers} ...", file=sys.stderr, flush=True)
            run = measure(tool, scratch / "corpora" / corpus_name, workers, scratch)
            rows.append({"corpus": corpus_name, **_row(run, corpora[corpus_name])})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for r in rows:
        if r["tool"].startswith("homegrown"):
            peer = next((p for p in rows if p["tool"] == "datatrove" and p["corpus"] == r["corpus"]
                         and p["workers"] == r["workers"]), None)
            if peer:
                r["ratio_vs_datatrove"] = round(r["docs_per_s_per_core"] / peer["docs_per_s_per_core"], 2)
    flat = {r["corpus"]: r["peak_rss_largest_mib"] for r in rows if r["tool"] == "homegrown" and r["workers"] == 1}
    table = format_table(rows)
    report = {
        "benchmark": "clean_vs_datatrove",
        "quick": quick,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version(),
                    "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "versions": _versions(),
        "corpora": corpora,
        "memory_flatness_homegrown_workers1_peak_rss_mib": flat,
        "rows": rows,
        "table": table,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    print(table)
    print(f"\nhomegrown peak RSS (workers=1, largest process) by corpus size: "
          + ", ".join(f"{k}: {v:.0f} MiB" for k, v in flat.items()))
    print("zh kept = share of lang_hint 'zh' records kept (of one copy); zh* = zh + zh-Hant; "
          "ratio = homegrown docs/s/core / datatrove's on the same corpus and workers")
    output = output or RESULTS / ("clean-quick.json" if quick else "clean.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"bench: wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output} "
          f"in {report['bench_seconds']:.0f} s", file=sys.stderr)
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("homegrown", "datatrove", "spacy", "ftfy", "xxhash", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
