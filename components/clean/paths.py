"""Every file the clean step reads or writes, named in one place.

    paths = CleanPaths.of("runs/x/clean", CleanConfig())
    paths.staged(3)   # runs/x/clean/work/<config digest>/filter/part-00003.jsonl.gz

Under `output_uri` (what the step publishes):
  shards/part-IIIII-JJJ.jsonl.gz   kept documents of input shard I, final shard J
  quarantine/part-IIIII.jsonl      quarantined records of input shard I
  dropped/<reason>.jsonl           dropped samples per reason
  stats.json, manifest.json
Under `output_uri/work/<config digest>/` (between phases; another config starts afresh):
  plan/units.json                  the work units: each a run of input files / byte ranges
  filter/part-IIIII.jsonl.gz       the shard's documents that passed the stages (staged shard)
  filter/part-IIIII.keys.npy       their exact-dedup keys (dedup.text_key)
  filter/part-IIIII.minhash.npy    their MinHash signatures (+ .json sidecar), near_dedup on
  filter/part-IIIII.done.json      marker, written last: {source, stats, seconds}
  filter/dropped/part-IIIII/<reason>.jsonl   dropped samples of the filter phase
  index/part-IIIII.exact.bin(.idx) the shard's exact keys sorted, and where each key prefix starts
  index/part-IIIII.bands.bin(.idx) per LSH band, its band keys sorted (near_dedup on)
  dedup/exact-PPPPP.npy (.json)    exact duplicates found in key-prefix partition P: (shard, row)
  dedup/near-GGGGG.bin (.json)     verified near-duplicate pairs of band group G: global ids, raw "<i8" rows of 2
  dedup/part-IIIII.json            the dedup phase's drop list {row: reason}
  write/part-IIIII.json            marker of the write phase: {inputs, shards, dropped, ...}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from components import storage
from components.clean.config import CleanConfig

OUTPUT_DIRS = ("shards", "dropped", "quarantine")  # published folders a rerun tidies


# CleanConfig fields that change how the step runs, never what it writes
RUN_ONLY = ("workers", "parallel_shards", "dedup_tasks", "tasks")


def part(index: int) -> str:
    """The name of input shard `index` in every file derived from it: part-IIIII."""
    return f"part-{index:05d}"


@dataclass(frozen=True)
class CleanPaths:
    output_uri: str
    work: str  # output_uri/work/<first 12 hex digits of sha256 of the config's JSON>

    @classmethod
    def of(cls, output_uri: str, config: CleanConfig) -> "CleanPaths":
        # how the work is run (processes, pods at once) does not change what it produces: a rerun
        # with other values resumes the same work instead of filtering every shard again
        settings = config.model_dump_json(exclude=set(RUN_ONLY))
        digest = hashlib.sha256(settings.encode()).hexdigest()[:12]
        return cls(output_uri, storage.join(output_uri, "work", digest))

    # ---- work files, by phase
    @property
    def units(self) -> str:
        return storage.join(self.work, "plan", "units.json")

    def staged(self, index: int) -> str:
        return storage.join(self.work, "filter", f"{part(index)}.jsonl.gz")

    def keys(self, index: int) -> str:
        return storage.join(self.work, "filter", f"{part(index)}.keys.npy")

    def signatures(self, index: int) -> str:
        return storage.join(self.work, "filter", f"{part(index)}.minhash.npy")

    def filter_marker(self, index: int) -> str:
        return storage.join(self.work, "filter", f"{part(index)}.done.json")

    def exact_index(self, index: int) -> str:
        return storage.join(self.work, "index", f"{part(index)}.exact.bin")

    def band_index(self, index: int) -> str:
        return storage.join(self.work, "index", f"{part(index)}.bands.bin")

    def exact_drops(self, partition: int) -> str:
        return storage.join(self.work, "dedup", f"exact-{partition:05d}.npy")

    def near_edges(self, group: int) -> str:
        return storage.join(self.work, "dedup", f"near-{group:05d}.bin")

    @property
    def cluster_marker(self) -> str:
        return storage.join(self.work, "dedup", "cluster.json")

    def filter_samples(self, index: int) -> str:
        """Folder of the filter phase's dropped samples of one shard: <reason>.jsonl files."""
        return storage.join(self.work, "filter", "dropped", part(index))

    def drop_list(self, index: int) -> str:
        return storage.join(self.work, "dedup", f"{part(index)}.json")

    def write_marker(self, index: int) -> str:
        return storage.join(self.work, "write", f"{part(index)}.json")

    # ---- published files
    def shard(self, index: int, number: int) -> str:
        return storage.join(self.output_uri, "shards", f"{part(index)}-{number:03d}.jsonl.gz")

    def quarantine(self, index: int) -> str:
        return storage.join(self.output_uri, "quarantine", f"{part(index)}.jsonl")

    def dropped(self, reason: str) -> str:
        return storage.join(self.output_uri, "dropped", f"{reason}.jsonl")

    @property
    def dropped_dir(self) -> str:
        return storage.join(self.output_uri, "dropped")

    @property
    def quarantine_dir(self) -> str:
        return storage.join(self.output_uri, "quarantine")

    @property
    def languages(self) -> str:
        return storage.join(self.output_uri, "languages.md")

    @property
    def stats(self) -> str:
        return storage.join(self.output_uri, "stats.json")

    @property
    def manifest(self) -> str:
        return storage.join(self.output_uri, "manifest.json")
