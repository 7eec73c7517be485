"""Streaming shard I/O: JSONL and JSONL.gz documents, read one record at a time.

Records that cannot be used (undecodable bytes, invalid JSON, missing or non-string text)
come out as `Quarantined` items with a reason instead of raising, so a step can count them.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from components import storage

DOCUMENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".json", ".jsonl.zst", ".json.zst", ".parquet")


try:
    from zstandard import ZstdError as _ZstdError
except ImportError:  # pragma: no cover - zstandard is a dependency

    class _ZstdError(Exception):
        pass


@dataclass
class Document:
    id: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "meta": self.meta}, ensure_ascii=False)


@dataclass
class Quarantined:
    source: str  # "<uri>:<line>"
    reason: str
    raw: str  # the offending record, cut short, for inspection


class ShardFormatError(ValueError):
    """A whole shard is unusable (e.g. a Parquet text column of the wrong type)."""


def _lines(uri: str) -> Iterator[bytes]:
    with storage.open_read(uri) as raw:
        if uri.endswith(".gz"):
            handle = gzip.GzipFile(fileobj=raw)
        elif uri.endswith(".zst"):
            import zstandard

            handle = io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
        else:
            handle = raw
        if not isinstance(handle, io.BufferedIOBase | io.RawIOBase | gzip.GzipFile):
            handle = io.BufferedReader(handle)  # s3 bodies are plain streams
        yield from handle


def _parquet_documents(uri: str, text_field: str, id_field: str) -> Iterator[Document | Quarantined]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.open_read(uri) as raw:
        data = raw.read() if storage.is_s3(uri) else None
        source = pa.BufferReader(data) if data is not None else storage.local_path(uri)
        try:
            table = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as exc:
            yield Quarantined(f"{uri}:0", "corrupt_parquet", str(exc)[:200])
            return
        schema = table.schema_arrow
        if text_field not in schema.names:
            raise ShardFormatError(f"{uri}: no column {text_field!r} (columns: {schema.names}); set clean.text_field")
        if not pa.types.is_string(schema.field(text_field).type) and not pa.types.is_large_string(
            schema.field(text_field).type
        ):
            raise ShardFormatError(
                f"{uri}: column {text_field!r} has type {schema.field(text_field).type}, expected string"
            )
        row = 0
        for batch in table.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                where = f"{uri}:{row}"
                text = record.get(text_field)
                if text is None:
                    yield Quarantined(where, f"missing_{text_field}", json.dumps(record, default=str)[:200])
                    continue
                if not text.strip():
                    yield Quarantined(where, f"empty_{text_field}", json.dumps(record, default=str)[:200])
                    continue
                doc_id = record.get(id_field)
                meta = {k: v for k, v in record.items() if k not in (text_field, id_field) and v is not None}
                yield Document(id=str(doc_id) if doc_id is not None else where, text=text, meta=meta)


def read_documents(uri: str, text_field: str = "text", id_field: str = "id") -> Iterator[Document | Quarantined]:
    """Yield each record of a shard as a Document, or as Quarantined with the reason.

    JSONL (plain, .gz, .zst) is read line by line; Parquet batch by batch.
    """
    if uri.endswith(".parquet"):
        yield from _parquet_documents(uri, text_field, id_field)
        return
    line_no = 0
    try:
        for line_no, line in enumerate(_lines(uri), start=1):
            where = f"{uri}:{line_no}"
            if not line.strip():
                continue
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError:
                yield Quarantined(where, "not_utf8", line[:200].decode("utf-8", "replace"))
                continue
            try:
                record = json.loads(decoded)
            except json.JSONDecodeError:
                yield Quarantined(where, "invalid_json", decoded[:200])
                continue
            if not isinstance(record, dict):
                yield Quarantined(where, "not_an_object", decoded[:200])
                continue
            text = record.get(text_field)
            if text is None:
                yield Quarantined(where, f"missing_{text_field}", decoded[:200])
                continue
            if not isinstance(text, str):
                yield Quarantined(where, f"{text_field}_not_a_string", decoded[:200])
                continue
            if not text.strip():
                yield Quarantined(where, f"empty_{text_field}", decoded[:200])
                continue
            doc_id = record.get(id_field)
            meta = {k: v for k, v in record.items() if k not in (text_field, id_field)}
            if isinstance(meta.get("meta"), dict):  # our own output format nests metadata
                meta = {**meta.pop("meta"), **meta}
            yield Document(id=str(doc_id) if doc_id is not None else where, text=text, meta=meta)
    except (EOFError, gzip.BadGzipFile, zlib.error, _ZstdError) as exc:
        yield Quarantined(f"{uri}:{line_no + 1}", "truncated_or_corrupt_file", str(exc)[:200])


def write_documents(uri: str, docs: Iterable[Document]) -> int:
    """Write documents as one JSONL(.gz) shard atomically; returns the record count."""
    count = 0
    with storage.open_write(uri) as raw:
        # mtime=0 keeps gzip output byte-identical across reruns
        handle = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if uri.endswith(".gz") else raw
        for doc in docs:
            handle.write(doc.to_json().encode("utf-8") + b"\n")
            count += 1
        if handle is not raw:
            handle.close()
    return count


def iter_texts(shard_uris: Iterable[str]) -> Iterator[Document]:
    """Documents from shards this project wrote (anything quarantined there is a bug)."""
    for uri in shard_uris:
        for item in read_documents(uri):
            if isinstance(item, Quarantined):
                raise ValueError(f"{item.source}: unreadable record in a cleaned shard ({item.reason})")
            yield item
