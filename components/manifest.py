"""The manifest: the small artifact passed between steps in place of the data itself.

A manifest lists the data files a step produced (URI, record count, content digest) plus
step-specific facts. Its digest identifies the dataset for lineage and caching.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from components import storage


class ShardInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uri: str
    records: int
    sha256: str
    bytes: int


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="what the shards hold, e.g. 'documents' or 'packed-tokens'")
    root: str = Field(description="URI of the directory the step wrote its data under")
    shards: list[ShardInfo] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def digest(self) -> str:
        """sha256 over the shard digests and facts: equal data gives an equal digest."""
        payload = json.dumps(
            {"kind": self.kind, "shards": [[s.records, s.sha256] for s in self.shards], "facts": self.facts},
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def save(self, uri: str) -> None:
        data = self.model_dump(mode="json")
        data["digest"] = self.digest
        storage.write_text(uri, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, uri: str) -> "Manifest":
        try:
            data = json.loads(storage.read_text(uri))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{uri}: not a homegrown manifest ({exc})") from exc
        recorded = data.pop("digest", None)
        manifest = cls.model_validate(data)
        if recorded is not None and recorded != manifest.digest:
            raise ValueError(f"{uri}: manifest digest mismatch (file edited after it was written?)")
        for shard in manifest.shards:
            if not storage.within(shard.uri, manifest.root):
                raise ValueError(
                    f"{uri}: shard {shard.uri} lies outside the manifest's root {manifest.root} (a '..', an "
                    "absolute path elsewhere or a symlink out); a manifest may only name files under its root"
                )
        return manifest


def file_digest(uri: str) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of one file."""
    h = hashlib.sha256()
    size = 0
    with storage.open_read(uri) as handle:
        while chunk := handle.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def shard_info(uri: str, records: int) -> ShardInfo:
    sha, size = file_digest(uri)
    return ShardInfo(uri=uri, records=records, sha256=sha, bytes=size)
