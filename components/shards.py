"""Streaming shard I/O: JSONL and JSONL.gz documents, read one record at a time.

Records that cannot be used (undecodable bytes, invalid JSON, missing or non-string text,
over-long lines) come out as `Quarantined` items with a reason instead of raising, so a step
can count them; so does a whole file that is not text (an image, random bytes). A file whose
records a rename or re-encoding would recover (UTF-16, gzip data under a plain name) raises
`ShardFormatError` saying so, rather than losing the whole file as one quarantined item.

Decisions a reader might not guess:
- Records are split on the byte b"\\n" only (a trailing \\r is JSON whitespace). JSON allows
  U+2028, U+2029 and U+0085 unescaped inside strings, and `str.splitlines()` would split on
  them: every JSONL reader here reads bytes by `readline`, never `splitlines`.
- A UTF-8 byte-order mark at the start of any line is skipped, not only the file's first:
  `cat a.jsonl b.jsonl` leaves b's mark at the start of a later line. A mark elsewhere in a
  line, or a UTF-16/32 one, quarantines the record with a `detail` naming the mark.
- A Parquet text column may be any Arrow type holding UTF-8 strings: string, large_string,
  string_view (Polars' default) or dictionary-encoded strings.
"""

from __future__ import annotations

import codecs
import datetime
import gzip
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Iterable, Iterator

from components import storage

DOCUMENT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".json", ".jsonl.zst", ".json.zst", ".parquet")
SPLITTABLE_SUFFIXES = (".jsonl", ".json")  # uncompressed: a reader can start at any byte


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
        return json.dumps({"id": self.id, "text": self.text, "meta": self.meta}, ensure_ascii=False,
                          default=_json_default)  # fmt: skip


def _json_default(value: Any) -> str:
    """Metadata JSON has no type for: dates and times (ISO 8601), decimals (exact, as text), bytes and
    durations (Python's str) -- what Parquet timestamp/decimal/binary columns read as."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


@dataclass
class Quarantined:
    source: str  # "<uri>:<line>"
    reason: str
    raw: str  # the offending record, cut short, for inspection
    detail: str = ""  # what exactly is wrong and what to do, where the reason alone does not say


class ShardFormatError(ValueError):
    """A whole shard is unusable (e.g. a Parquet text column of the wrong type)."""


@dataclass
class _Unreadable:
    """A line, or the rest of the file, that `_lines` did not hand over as bytes."""

    reason: str
    head: bytes
    detail: str


_SNIFF_BYTES = 4096
_SKIP_CHUNK = 1 << 20
_COMPRESSION = {".gz": (b"\x1f\x8b", "gzip"), ".zst": (b"\x28\xb5\x2f\xfd", "zstd")}
# formats this module reads under another name: a rename recovers every record
_MISNAMED = {b"\x1f\x8b": ("gzip-compressed", ".jsonl.gz"), b"\x28\xb5\x2f\xfd": ("zstd-compressed", ".jsonl.zst"),
             b"PAR1": ("Parquet", ".parquet")}  # fmt: skip
_BINARY = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image",
           b"%PDF": "a PDF document", b"PK\x03\x04": "a ZIP archive"}  # fmt: skip
# UTF-32 first: its little-endian mark begins with UTF-16's
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))  # fmt: skip


def _show(data: bytes) -> str:
    """The first bytes of something unreadable, with undecodable bytes visible as \\xNN."""
    return data[:200].decode("utf-8", "backslashreplace")


def _check_name(uri: str, head: bytes) -> None:
    """The file's first bytes must match its compression suffix, or lack one where they show one."""
    for suffix, (magic, kind) in _COMPRESSION.items():
        if uri.endswith(suffix):
            if head and not head.startswith(magic):
                raise ShardFormatError(
                    f"{uri}: named {suffix} but not {kind}-compressed (it starts with {head[:8]!r}): "
                    f"rename it to match its content (plain JSON lines end in .jsonl)"
                )
            return
    for magic, (kind, name) in _MISNAMED.items():
        if head.startswith(magic):
            raise ShardFormatError(f"{uri}: {kind} data in a file not named {name}: rename it to end in {name}")


def _not_text(uri: str, head: bytes) -> _Unreadable | None:
    """Why the (decompressed) content is not UTF-8 text, judged from its first bytes; None if it may be."""
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            raise ShardFormatError(
                f"{uri}: {encoding} text (it starts with a {encoding} byte-order mark), but shards must be UTF-8: "
                f"re-encode it, e.g. `iconv -f {encoding} -t UTF-8 IN > OUT`"
            )
    for magic, kind in _BINARY.items():
        if head.startswith(magic):
            return _Unreadable("binary_file", head[:32], f"{kind}, not UTF-8 JSON lines; nothing in it was read")
    # JSON escapes NUL: more than a stray one (which fails as its record's invalid_json) is binary
    # data, or UTF-16/32 without a byte-order mark
    if head.count(0) > max(1, len(head) // 1000):
        return _Unreadable("binary_file", head[:32], "NUL bytes: binary data or UTF-16/32 text, not UTF-8 JSON lines; "
                                                     "nothing in it was read")  # fmt: skip
    return None


def _open_decoded(uri: str, raw: BinaryIO) -> BinaryIO:
    """A peekable stream of the file's uncompressed bytes, after checking its name fits its content."""
    raw = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # s3 bodies are plain streams
    _check_name(uri, raw.peek(_SNIFF_BYTES))
    if uri.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if uri.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
    return raw


def _skip_line(handle: BinaryIO) -> int:
    """Read past the rest of a line in bounded chunks; the bytes skipped."""
    skipped = 0
    while chunk := handle.readline(_SKIP_CHUNK):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _lines(uri: str, max_bytes: int | None, start: int = 0, end: int | None = None) -> Iterator[tuple[int, bytes | _Unreadable]]:
    """(byte offset, line) for the file's lines; one longer than `max_bytes` comes out as
    `_Unreadable`, never whole. With `start`/`end` (an uncompressed file only): the lines that
    begin in bytes [start, end), as Hadoop's line reader splits a file: a range that starts inside
    a line leaves that line to the range before it."""
    if start and _not_text(uri, storage.read_range(uri, 0, _SNIFF_BYTES)) is not None:
        return  # a file that is not text is one quarantined record, the first range's
    with storage.open_read(uri, max(start - 1, 0)) as raw:
        handle = _open_decoded(uri, raw) if not start else (raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw))
        offset = 0
        if start:
            offset = start - 1 + _skip_line(handle)  # the rest of the line holding byte start - 1
        else:
            unreadable = _not_text(uri, handle.peek(_SNIFF_BYTES))
            if unreadable is not None:
                yield offset, unreadable
                return
        limit = max_bytes + 1 if max_bytes is not None else -1
        while (end is None or offset < end) and (line := handle.readline(limit)):
            at = offset
            if max_bytes is not None and len(line) > max_bytes and not line.endswith(b"\n"):
                first, line = line[:200], b""  # let go of the over-long part before skipping the rest
                size = max_bytes + 1 + _skip_line(handle)
                offset += size
                detail = f"a line of {size:,} bytes, over max_line_bytes ({max_bytes:,}); skipped without reading it whole"
                yield at, _Unreadable("line_too_long", first, detail)
            else:
                offset += len(line)
                # Windows tools start a file with a mark, and `cat` puts a later file's mid-file;
                # JSON may not start with one
                yield at, line.removeprefix(codecs.BOM_UTF8)


def is_text_type(arrow_type: Any) -> bool:
    """Whether an Arrow type holds UTF-8 strings: string, large_string, string_view (pyarrow >= 16;
    Polars >= 1.38 writes it by default), or a dictionary whose values are one of those."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        return is_text_type(arrow_type.value_type)
    is_view = getattr(pa.types, "is_string_view", lambda _: False)  # absent before pyarrow 16
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or is_view(arrow_type)


def _parquet_documents(
    uri: str, text_field: str, id_field: str, max_chars: int | None
) -> Iterator[Document | Quarantined]:
    """Batch by batch; a text longer than max_chars is quarantined before anything processes it
    (a Parquet cell has no line to skip: the batch holding it is in memory, nothing more)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.local_copy(uri) as source:  # from S3: streamed to disk, not read into memory
        try:
            table = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as exc:
            yield Quarantined(f"{uri}:0", "corrupt_parquet", str(exc)[:200])
            return
        schema = table.schema_arrow
        if text_field not in schema.names:
            raise ShardFormatError(f"{uri}: no column {text_field!r} (columns: {schema.names}); set clean.text_field")
        if not is_text_type(schema.field(text_field).type):
            raise ShardFormatError(
                f"{uri}: column {text_field!r} has type {schema.field(text_field).type}, expected string "
                f"(string, large_string, string_view or dictionary of strings); set clean.text_field to a text column"
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
                if max_chars is not None and len(text) > max_chars:
                    detail = f"a {text_field} of {len(text):,} characters, over max_line_bytes ({max_chars:,})"
                    yield Quarantined(where, "line_too_long", text[:200], detail)
                    continue
                if not text.strip():
                    yield Quarantined(where, f"empty_{text_field}", json.dumps(record, default=str)[:200])
                    continue
                doc_id = record.get(id_field)
                meta = {k: v for k, v in record.items() if k not in (text_field, id_field) and v is not None}
                yield Document(id=str(doc_id) if doc_id is not None else where, text=text, meta=meta)


def read_documents(
    uri: str, text_field: str = "text", id_field: str = "id", max_line_bytes: int | None = None,
    byte_range: tuple[int, int | None] | None = None,
) -> Iterator[Document | Quarantined]:
    """Yield each record of a shard as a Document, or as Quarantined with the reason.

    JSONL (plain, .gz, .zst) is read line by line, a line over `max_line_bytes` skipped unread
    (so memory stays bounded whatever a file holds); Parquet batch by batch. A file with none of
    these suffixes is one quarantined item. `byte_range` (start, end or None), for a plain
    .jsonl/.json file only: the records whose line begins in those bytes (SPLITTABLE_SUFFIXES).
    """
    if byte_range is not None and not uri.endswith(SPLITTABLE_SUFFIXES):
        raise ValueError(f"{uri}: only {', '.join(SPLITTABLE_SUFFIXES)} files are read by byte range")
    if uri.endswith(".parquet"):
        yield from _parquet_documents(uri, text_field, id_field, max_line_bytes)
        return
    if not uri.endswith(DOCUMENT_SUFFIXES):
        yield Quarantined(f"{uri}:0", "unsupported_file_type", "",
                          f"not a document shard (those end in {', '.join(DOCUMENT_SUFFIXES)}): "
                          f"convert it, or move it out of the input")  # fmt: skip
        return
    for where, item, raw in _jsonl_objects(uri, max_line_bytes, byte_range):
        yield item if isinstance(item, Quarantined) else _document(where, item, raw, text_field, id_field)


def read_records(uri: str, max_line_bytes: int | None = None) -> Iterator[tuple[str, dict[str, Any] | Quarantined]]:
    """Yield ("<uri>:<line or row>", the record's JSON object | Quarantined) for each record of a shard.

    The same reading as `read_documents` (byte-\\n lines, BOMs, compression, over-long lines
    skipped unread, undecodable or non-object lines quarantined), without asking for a text
    field: for records of other shapes (conversations). Parquet rows come batch by batch as
    dicts (nested list/struct columns as lists/dicts); a whole Parquet row is in memory with its
    batch, so `max_line_bytes` bounds JSONL lines only. A file with none of DOCUMENT_SUFFIXES is
    one quarantined item.
    """
    if uri.endswith(".parquet"):
        yield from _parquet_rows(uri)
        return
    if not uri.endswith(DOCUMENT_SUFFIXES):
        yield f"{uri}:0", Quarantined(f"{uri}:0", "unsupported_file_type", "",
                                      f"not a record shard (those end in {', '.join(DOCUMENT_SUFFIXES)}): "
                                      f"convert it, or move it out of the input")  # fmt: skip
        return
    for where, item, _ in _jsonl_objects(uri, max_line_bytes):
        yield where, item


def _parquet_rows(uri: str) -> Iterator[tuple[str, dict[str, Any] | Quarantined]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.local_copy(uri) as source:  # from S3: streamed to disk, not read into memory
        try:
            table = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as exc:
            yield f"{uri}:0", Quarantined(f"{uri}:0", "corrupt_parquet", str(exc)[:200])
            return
        row = 0
        for batch in table.iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield f"{uri}:{row}", record


def _jsonl_objects(uri: str, max_line_bytes: int | None, byte_range: tuple[int, int | None] | None = None
                   ) -> Iterator[tuple[str, dict[str, Any] | Quarantined, str]]:
    """(where, JSON object | Quarantined, the line's start for a quarantine row) per non-blank line of a
    JSONL(.gz/.zst) file, or of the lines beginning in `byte_range` of a plain one. `where` is
    "<uri>:<line number>", or "<uri>@<byte offset>" in a range that starts past byte 0 (its line
    numbers would need the bytes before it)."""
    line_no = 0
    where = f"{uri}:1"
    start, end = byte_range if byte_range is not None else (0, None)
    try:
        for line_no, (offset, line) in enumerate(_lines(uri, max_line_bytes, start, end), start=1):
            where = f"{uri}@{offset}" if start else f"{uri}:{line_no}"
            item = _json_object(where, line)
            if isinstance(item, Quarantined):
                yield where, item, item.raw
            elif item is not None:
                yield where, item[0], item[1]
    except (EOFError, gzip.BadGzipFile, zlib.error, _ZstdError) as exc:
        where = f"{uri}:{line_no + 1}"
        yield where, Quarantined(where, "truncated_or_corrupt_file", str(exc)[:200]), ""


def _json_object(where: str, line: bytes | _Unreadable) -> tuple[dict[str, Any], str] | Quarantined | None:
    """One JSONL line as (its JSON object, its first 200 characters), Quarantined with the reason, or
    None for a blank line."""
    if isinstance(line, _Unreadable):
        return Quarantined(where, line.reason, _show(line.head), line.detail)
    if not line.strip():
        return None
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        detail = (f"byte 0x{line[exc.start]:02x} at offset {exc.start} is not UTF-8; shards must be UTF-8 "
                  f"(from cp1252/latin-1: `iconv -f cp1252 -t UTF-8 IN > OUT`)")  # fmt: skip
        for bom, encoding in _WIDE_BOMS:
            if line.startswith(bom):
                detail = (f"the line starts with a {encoding} byte-order mark: a {encoding} file joined onto this "
                          f"one (`cat`)? Re-encode that file (`iconv -f {encoding} -t UTF-8 IN > OUT`) before "
                          f"joining")  # fmt: skip
                break
        return Quarantined(where, "not_utf8", _show(line), detail)
    try:
        record = json.loads(decoded)
    except json.JSONDecodeError as exc:
        return Quarantined(where, "invalid_json", decoded[:200], _invalid_json_detail(line, decoded, exc))
    if not isinstance(record, dict):
        return Quarantined(where, "not_an_object", decoded[:200])
    return record, decoded[:200]


def _document(where: str, record: dict[str, Any], raw: str, text_field: str, id_field: str) -> Document | Quarantined:
    """A JSONL record as a Document, or Quarantined (with `raw`, the line) for a missing, non-string or empty text."""
    text = record.get(text_field)
    if text is None:
        return Quarantined(where, f"missing_{text_field}", raw)
    if not isinstance(text, str):
        return Quarantined(where, f"{text_field}_not_a_string", raw)
    if not text.strip():
        return Quarantined(where, f"empty_{text_field}", raw)
    doc_id = record.get(id_field)
    meta = {k: v for k, v in record.items() if k not in (text_field, id_field)}
    if isinstance(meta.get("meta"), dict):  # our own output format nests metadata
        meta = {**meta.pop("meta"), **meta}
    return Document(id=str(doc_id) if doc_id is not None else where, text=text, meta=meta)


def _invalid_json_detail(line: bytes, decoded: str, exc: json.JSONDecodeError) -> str:
    """What a line that is not JSON shows of how it came to be, where it shows it; else ""."""
    if decoded.startswith("\ufeff", exc.pos):
        return (f"a UTF-8 byte-order mark (U+FEFF) at character {exc.pos}, where JSON cannot have one: two files "
                f"joined without a newline between them (`cat` of a file lacking its final newline)? Put the line "
                f"break back before the mark")  # fmt: skip
    if line.count(0) * 4 >= len(line):  # ASCII in UTF-16 is every other byte NUL, in UTF-32 three in four
        return ("NUL bytes between the characters: UTF-16/32 text inside a UTF-8 file (a wide-encoded file joined "
                "onto it?); re-encode that part to UTF-8 (`iconv -f UTF-16 -t UTF-8 IN > OUT`, or UTF-32)")
    return ""


def read_json_lines(uri: str) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL or JSONL.gz file this project wrote (dropped samples, quarantine), in order.

    Lines are split on b"\\n" only, so U+2028/U+2029/U+0085 inside strings stay in their record
    (`str.splitlines()` would cut the record there). Blank lines are skipped.
    Raises ValueError naming `uri:line` for a line that is not a JSON object.
    """
    with storage.open_read(uri) as raw:
        handle = _open_decoded(uri, raw)
        line_no = 0
        while line := handle.readline():
            line_no += 1
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{uri}:{line_no}: not a JSON line ({exc}); was the file edited by hand?") from None
            if not isinstance(row, dict):
                raise ValueError(f"{uri}:{line_no}: a JSON {type(row).__name__}, expected an object")
            yield row


def write_documents(uri: str, docs: Iterable[Document]) -> int:
    """Write documents as one JSONL(.gz) shard atomically; returns the record count."""
    return _write_lines(uri, (doc.to_json() for doc in docs))


def write_records(uri: str, records: Iterable[dict[str, Any]]) -> int:
    """Write JSON objects as one JSONL(.gz) shard atomically, one per line (UTF-8, not ASCII-escaped;
    dates, decimals and bytes as Document metadata writes them); returns the record count."""
    return _write_lines(uri, (json.dumps(r, ensure_ascii=False, default=_json_default) for r in records))


def _write_lines(uri: str, lines: Iterable[str]) -> int:
    count = 0
    with storage.open_write(uri) as raw:
        # mtime=0 keeps gzip output byte-identical across reruns
        handle = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if uri.endswith(".gz") else raw
        for line in lines:
            handle.write(line.encode("utf-8") + b"\n")
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
