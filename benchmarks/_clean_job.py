"""One timed clean run, in its own process (spawned by benchmarks.clean_vs_datatrove).

    python -m benchmarks._clean_job {homegrown,homegrown-full,datatrove,datatrove-aligned} INPUT WORK WORKERS RESULT_JSON

Imports happen before the clock starts; the clock stops when the tool has written its final
output. Kept documents and their `lang_hint` are then counted from that output (not timed).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import resource
import sys
import time
from collections import Counter


def _count_output(files: list[str]) -> tuple[int, dict[str, int]]:
    kept, langs = 0, Counter()
    for path in files:
        with gzip.open(path, "rb") as f:  # binary: records split on b"\n" only, not at a \r
            for line in f:
                if not line.strip():
                    continue
                record = json.loads(line)
                kept += 1
                meta = record.get("meta") or record.get("metadata") or {}
                langs[meta.get("lang_hint", "?")] += 1
    return kept, dict(langs)


# ---- homegrown ------------------------------------------------------------------------------


def run_homegrown(input_dir: str, work: str, workers: int, full: bool) -> tuple[float, list[str], dict]:
    from components.clean.clean import clean_corpus
    from components.clean.config import CleanConfig

    if full:
        config = CleanConfig(workers=workers)  # our defaults: + langid + PII masking
    else:
        config = CleanConfig(workers=workers, langid=None, pii=None)  # normalise, length, quality, exact + near dedup
    output = os.path.join(work, "out")
    started = time.perf_counter()
    result = clean_corpus(input_dir, output, config)
    seconds = time.perf_counter() - started
    files = sorted(glob.glob(os.path.join(output, "shards", "*.jsonl.gz")))
    return seconds, files, {"dropped": result.stats.dropped}


# ---- datatrove ------------------------------------------------------------------------------


def _text(doc) -> bytes:
    return doc.text.encode("utf-8")  # xxhash needs bytes


def run_datatrove(input_dir: str, work: str, workers: int, aligned: bool = False) -> tuple[float, list[str], dict]:
    """FineWeb's filter recipe minus URL/langid/fastText, then exact dedup, then MinHash dedup.

    One LocalPipelineExecutor per datatrove stage, run in turn, tasks = workers for the
    per-document stages (tasks=14=num_buckets for MinhashDedupBuckets, as datatrove requires;
    1 task for the two global stages). `aligned` lowers GopherQualityFilter's min_doc_words from
    50 to our min_words (10) and turns off C4QualityFilter's 5-sentence minimum, so the short
    documents of the demo corpus are not all dropped for length alone. A writer passes documents on, so the signature steps
    ride in the same pass as the writer they follow (datatrove's doc ids are per-rank stream
    positions, which match the order of that rank's written file).
    """
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupFilter, ExactDedupSignature, ExactFindDedups
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )
    from datatrove.pipeline.formatters import FTFYFormatter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers.jsonl import JsonlWriter

    d = lambda name: os.path.join(work, name)  # noqa: E731
    exact_config = ExactDedupConfig(content_getter=_text)
    minhash_config = MinhashConfig()  # datatrove defaults: 5-grams, 14 buckets x 8 hashes, 64-bit
    tasks = workers

    def executor(pipeline, name, n_tasks=tasks, n_workers=workers):
        return LocalPipelineExecutor(pipeline=pipeline, tasks=n_tasks, workers=min(n_workers, n_tasks),
                                     logging_dir=d(f"logs/{name}"), skip_completed=False)

    stages = [
        executor([
            JsonlReader(input_dir, glob_pattern="*.jsonl"),
            FTFYFormatter(),
            GopherRepetitionFilter(),
            GopherQualityFilter(min_doc_words=10) if aligned else GopherQualityFilter(),
            C4QualityFilter(filter_no_terminal_punct=False, min_num_sentences=-1) if aligned
            else C4QualityFilter(filter_no_terminal_punct=False),  # as FineWeb runs it
            FineWebQualityFilter(),
            JsonlWriter(d("filtered")),
            ExactDedupSignature(d("exact_sigs"), config=exact_config),
        ], "filter"),
        executor([ExactFindDedups(d("exact_sigs"), d("exact_dups"), config=exact_config)], "exact_find", 1, 1),
        executor([
            JsonlReader(d("filtered")),
            ExactDedupFilter(d("exact_dups"), config=exact_config),
            JsonlWriter(d("exact")),
            MinhashDedupSignature(d("mh_sigs"), config=minhash_config),
        ], "exact_filter"),
        executor([MinhashDedupBuckets(d("mh_sigs"), d("mh_buckets"), config=minhash_config)], "mh_buckets",
                 minhash_config.num_buckets),
        executor([MinhashDedupCluster(d("mh_buckets"), d("mh_remove"), config=minhash_config)], "mh_cluster", 1, 1),
        executor([
            JsonlReader(d("exact")),
            MinhashDedupFilter(d("mh_remove")),
            JsonlWriter(d("final")),
        ], "mh_filter"),
    ]
    started = time.perf_counter()
    for stage in stages:
        stage.run()
    seconds = time.perf_counter() - started
    files = sorted(glob.glob(os.path.join(d("final"), "*.jsonl.gz")))
    return seconds, files, {}


def main() -> None:
    tool, input_dir, work, workers, result_path = sys.argv[1:6]
    workers = int(workers)
    if tool.startswith("datatrove"):
        import datatrove.pipeline.filters  # noqa: F401  (imports before the clock)
        seconds, files, extra = run_datatrove(input_dir, work, workers, aligned=(tool == "datatrove-aligned"))
    else:
        import components.clean.clean  # noqa: F401
        seconds, files, extra = run_homegrown(input_dir, work, workers, full=(tool == "homegrown-full"))
    kept, langs = _count_output(files)
    rusage_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rusage_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(result_path, "w") as f:
        json.dump({"seconds": seconds, "kept": kept, "kept_by_lang_hint": langs,
                   "maxrss_self_kib": rusage_self, "maxrss_children_kib": rusage_children, **extra}, f)


if __name__ == "__main__":
    main()
