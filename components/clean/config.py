from pydantic import Field, model_validator

from components.clean.langid import LangIdConfig
from components.clean.minhash_config import NearDedupConfig
from components.clean.normalize import NormalForm
from components.clean.pii import PiiConfig
from components.clean.quality import QualityConfig
from components.config import Section


class CleanConfig(Section):
    text_field: str = Field("text", description="record key holding the document text")
    id_field: str = Field("id", description="record key holding the document id (optional in records)")
    normalization: NormalForm = Field(
        "NFC",
        description="Unicode normal form. NFC (the default; NFKC before this release): canonical composition only, "
        "no change of meaning. NFC_FULLWIDTH_ALNUM: NFC, then full-width letters and digits (ＡＢＣ１２３) become "
        "ASCII; full-width punctuation (，：（）), U+3000 and half-width katakana, native in CJK text, stay. NFKC "
        "rewrites meaning (x² -> x2, H₂O -> H2O, ㎡ -> m2, ① -> 1, Chinese ， -> ASCII ,, no-break spaces -> space); "
        "only on request. Details: components/clean/normalize.py",
    )
    fix_mojibake: bool = Field(True, description="repair mis-decoded UTF-8 (mojibake) with ftfy")
    strip_html: bool = Field(False, description="remove HTML tags, script/style blocks and entities")
    min_chars: int = Field(20, ge=0, description="documents shorter than this (after normalising) are dropped")
    max_chars: int = Field(100_000, ge=1, description="documents longer than this are dropped")
    max_line_bytes: int = Field(
        8 * 2**20,
        ge=1,
        description="a JSONL line longer than this many bytes is quarantined as line_too_long without being read "
        "whole, which bounds a worker's memory (a Parquet text longer than this many characters too, before any "
        "processing); at least max_chars, with room for JSON escapes and the markup strip_html removes",
    )
    shard_max_records: int = Field(5_000, ge=1, description="records per output shard")
    dropped_samples: int = Field(
        20, ge=0, description="dropped documents kept per reason and language for inspection (`homegrown dropped`)"
    )
    tasks: int = Field(
        0, ge=0, le=100_000, description="work units the corpus is cut into, balanced by size (files, or byte ranges of "
        "plain JSONL): the filter and write tasks, whatever the number of files; 0 = one per CPU core of the "
        "machine planning; on a cluster set it (e.g. 1 per 2-5 GB of input)",
    )
    workers: int = Field(0, ge=0, description="processes cleaning shards in parallel; 0 = one per CPU core")
    dedup_tasks: int = Field(
        4, ge=1, le=1024, description="tasks of each dedup stage: exact dedup per key-prefix partition, near dedup per "
        "group of LSH bands (at most `bands`); each holds a bounded chunk of records, whatever the corpus size",
    )
    parallel_shards: int = Field(
        0, ge=0, description="on a cluster: pods cleaning shards at once (0 = no limit); locally tasks run in turn"
    )
    langid: LangIdConfig | None = Field(
        default_factory=LangIdConfig, description="language and script ID (tags every document); null turns it off"
    )
    quality: QualityConfig | None = Field(
        default_factory=QualityConfig, description="script-aware Gopher/C4/FineWeb-style filters; null turns them off"
    )
    pii: PiiConfig | None = Field(default_factory=PiiConfig, description="PII masking; null turns it off")
    near_dedup: NearDedupConfig | None = Field(
        default_factory=NearDedupConfig, description="MinHash LSH near-duplicate removal; null turns it off"
    )

    @model_validator(mode="after")
    def _a_line_holds_the_longest_document(self) -> "CleanConfig":
        if self.max_line_bytes < self.max_chars:
            raise ValueError(
                f"max_line_bytes ({self.max_line_bytes}) is below max_chars ({self.max_chars}): documents max_chars "
                f"allows would be quarantined as line_too_long; raise max_line_bytes"
            )
        return self
