"""components.storage, shards and the clean step against a real S3 server (SeaweedFS, SigV4)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path

import pytest

from components import shards, storage
from components.clean.clean import CleanError, clean_corpus
from components.clean.config import CleanConfig
from components.manifest import Manifest
from components.shards import read_json_lines
from tests.s3 import S3Server  # fixtures come from tests/s3.py via conftest

BASIC = {"langid": None, "quality": None, "pii": None, "near_dedup": None, "workers": 1}
DATA = Path(__file__).parent / "data"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "All human beings are born free and equal in dignity and rights.",
    "Everyone has the right to life, liberty and security of person.",
    "No one shall be held in slavery or servitude in any of its forms.",
    "Everyone has the right to recognition everywhere as a person before the law.",
    "Everyone has the right to freedom of movement and residence within each State.",
]


def keys(s3: S3Server, bucket_name: str) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket_name)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


# ---- storage --------------------------------------------------------------------------------


def test_bytes_text_exists_list_fingerprint_round_trip(bucket, s3_env):
    root = f"s3://{bucket}/data"
    storage.write_bytes(storage.join(root, "b.jsonl"), b'{"text": "x"}\n')
    storage.write_text(storage.join(root, "sub", "a.jsonl.gz"), "héllo wörld")
    storage.write_bytes(storage.join(root, "notes.txt"), b"")
    storage.write_bytes(f"s3://{bucket}/data-old/c.jsonl", b"sibling, not under data/")

    assert storage.read_bytes(f"{root}/b.jsonl") == b'{"text": "x"}\n'
    assert storage.read_text(f"{root}/sub/a.jsonl.gz") == "héllo wörld"
    assert storage.read_bytes(f"{root}/notes.txt") == b""
    assert keys(s3_env, bucket) == ["data-old/c.jsonl", "data/b.jsonl", "data/notes.txt", "data/sub/a.jsonl.gz"]

    assert storage.exists(f"{root}/b.jsonl")
    assert storage.exists(root) and storage.exists(root + "/") and storage.exists(f"{root}/sub")
    assert storage.exists(f"s3://{bucket}")
    assert not storage.exists(f"{root}/missing.jsonl")
    assert not storage.exists(f"{root}/b.json")  # a prefix of a key is not a file
    assert not storage.exists(f"s3://{bucket}/dat")  # … nor a directory

    # a "directory" is what is under <prefix>/, exactly as locally; sorted; suffix filter
    assert storage.list_files(root) == [f"{root}/b.jsonl", f"{root}/notes.txt", f"{root}/sub/a.jsonl.gz"]
    assert storage.list_files(root + "/") == storage.list_files(root)
    assert storage.list_files(root, (".jsonl", ".jsonl.gz")) == [f"{root}/b.jsonl", f"{root}/sub/a.jsonl.gz"]
    assert storage.list_files(f"{root}/b.jsonl") == [f"{root}/b.jsonl"]  # a file lists itself
    assert storage.list_files(f"s3://{bucket}", (".jsonl",)) == [f"s3://{bucket}/data-old/c.jsonl", f"{root}/b.jsonl"]
    with pytest.raises(storage.StorageError, match=f"s3://{bucket}/nothing"):
        storage.list_files(f"s3://{bucket}/nothing")

    first = storage.fingerprint(f"{root}/b.jsonl")
    assert first.startswith("14-") and first == storage.fingerprint(f"{root}/b.jsonl")
    storage.write_bytes(f"{root}/b.jsonl", b'{"text": "y"}\n')  # same size, new content
    assert storage.fingerprint(f"{root}/b.jsonl") not in (first, "")
    assert first.split("-", 1)[1] == hashlib.md5(b'{"text": "x"}\n').hexdigest()  # single-part ETag


def test_client_uses_endpoint_and_path_style(bucket, s3_env, monkeypatch):
    """Requests go to AWS_ENDPOINT_URL as http://host:port/<bucket>/<key>, signed with SigV4."""
    sent, clients = [], []
    make_client = storage._s3_client

    def recording_client():
        client = make_client()
        client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request), unique_id="rec")
        clients.append(client)
        return client

    monkeypatch.setattr(storage, "_s3_client", recording_client)
    try:
        storage.write_bytes(f"s3://{bucket}/k/v.txt", b"v")
        assert storage.read_bytes(f"s3://{bucket}/k/v.txt") == b"v"
    finally:
        for client in clients:  # storage caches its clients: leave no hook behind
            client.meta.events.unregister("before-send.s3", unique_id="rec")
    assert sent and all(r.url.startswith(f"{s3_env.endpoint_url}/{bucket}/") for r in sent), [r.url for r in sent]
    assert all(r.headers["Authorization"].startswith(b"AWS4-HMAC-SHA256") for r in sent)


def test_open_write_multipart_upload_and_streaming_read(bucket, s3_env):
    uri = f"s3://{bucket}/big/blob.bin"
    block = os.urandom(1 << 20)
    total = hashlib.sha256()
    with storage.open_write(uri) as handle:
        for i in range(9):  # 9 MiB + a tail: above boto3's 8 MiB multipart threshold
            handle.write(block)
            total.update(block)
        handle.write(b"tail")
        total.update(b"tail")
    head = s3_env.client().head_object(Bucket=bucket, Key="big/blob.bin")
    assert head["ContentLength"] == 9 * (1 << 20) + 4
    assert head["ETag"].strip('"').endswith("-2")  # really uploaded in 2 parts
    assert storage.fingerprint(uri) == f"{9 * (1 << 20) + 4}-{head['ETag'].strip(chr(34))}"

    streamed = hashlib.sha256()
    with storage.open_read(uri) as handle:
        while chunk := handle.read(1 << 20):
            streamed.update(chunk)
    assert streamed.hexdigest() == total.hexdigest()


def test_open_write_publishes_nothing_when_the_block_fails(bucket, s3_env):
    with pytest.raises(ZeroDivisionError):
        with storage.open_write(f"s3://{bucket}/half.bin") as handle:
            handle.write(b"partial")
            1 / 0
    assert not storage.exists(f"s3://{bucket}/half.bin")
    assert keys(s3_env, bucket) == []


def test_upload_dir_download_dir_round_trip(bucket, s3_env, tmp_path):
    src = tmp_path / "model"
    (src / "tokenizer").mkdir(parents=True)
    (src / "config.json").write_text('{"n_layer": 2}')
    (src / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    (src / "weights.bin").write_bytes(os.urandom(100_000))
    uri = f"s3://{bucket}/runs/r1/model"
    storage.upload_dir(src, uri)
    storage.write_bytes(f"s3://{bucket}/runs/r1/model-extra/x.bin", b"not part of model/")
    assert keys(s3_env, bucket) == [
        "runs/r1/model-extra/x.bin",
        "runs/r1/model/config.json",
        "runs/r1/model/tokenizer/vocab.json",
        "runs/r1/model/weights.bin",
    ]

    for target_uri in (uri, uri + "/"):
        dest = storage.download_dir(target_uri, tmp_path / f"dl{len(target_uri)}")
        got = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
        assert got == ["config.json", "tokenizer/vocab.json", "weights.bin"]
        for name in got:
            assert (dest / name).read_bytes() == (src / name).read_bytes()

    with pytest.raises(storage.StorageError, match=f"s3://{bucket}/runs/r2/model"):
        storage.download_dir(f"s3://{bucket}/runs/r2/model", tmp_path / "missing")


def test_missing_key_and_missing_bucket_raise_storage_error_naming_the_uri(bucket, s3_env, capfd):
    missing = f"s3://{bucket}/no/such/key.jsonl"
    with pytest.raises(storage.StorageError, match=f"{missing}: cannot read .*NoSuchKey"):
        storage.read_bytes(missing)
    with pytest.raises(storage.StorageError, match=missing):
        storage.fingerprint(missing)
    no_bucket = "s3://homegrown-no-such-bucket/x.jsonl"
    with pytest.raises(storage.StorageError, match=no_bucket):
        storage.read_bytes(no_bucket)
    with pytest.raises(storage.StorageError, match=no_bucket):
        storage.exists(no_bucket)
    with pytest.raises(storage.StorageError, match=no_bucket):
        storage.write_bytes(no_bucket, b"x")
    assert "retrying" not in capfd.readouterr().err, "a refusal is final: no retries with backoff"


def test_wrong_secret_key_is_rejected(bucket, s3_env, monkeypatch, capfd):
    good = f"s3://{bucket}/secret.txt"
    storage.write_bytes(good, b"classified")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")

    with pytest.raises(storage.StorageError, match=f"{good}: .*SignatureDoesNotMatch"):
        storage.read_bytes(good)
    with pytest.raises(storage.StorageError, match=f"s3://{bucket}/new.txt.*SignatureDoesNotMatch"):
        storage.write_bytes(f"s3://{bucket}/new.txt", b"forged")
    with pytest.raises(storage.StorageError, match="SignatureDoesNotMatch"):
        storage.exists(good)
    with pytest.raises(storage.StorageError, match="SignatureDoesNotMatch"):
        storage.list_files(f"s3://{bucket}")
    with pytest.raises(storage.StorageError, match="SignatureDoesNotMatch"):
        storage.upload_dir(Path(__file__).parent / "data", f"s3://{bucket}/up")

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "no-such-access-key")
    with pytest.raises(storage.StorageError, match="InvalidAccessKeyId"):
        storage.read_bytes(good)
    assert "retrying" not in capfd.readouterr().err, "a refusal is final: no retries with backoff"
    # nothing was written with the bad credentials
    assert keys(s3_env, bucket) == ["secret.txt"]


# ---- shards -----------------------------------------------------------------------------------


def test_read_documents_jsonl_gz_and_parquet_from_s3(bucket, s3_env):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"id": f"d{i}", "text": s, "source": "udhr"} for i, s in enumerate(SENTENCES)]
    jsonl = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    broken = jsonl + b"{not json\n" + json.dumps({"id": "n", "body": "no text"}).encode() + b"\n"
    root = f"s3://{bucket}/corpus"
    storage.write_bytes(f"{root}/a.jsonl", broken)
    storage.write_bytes(f"{root}/b.jsonl.gz", gzip.compress(jsonl))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    storage.write_bytes(f"{root}/c.parquet", buffer.getvalue())
    storage.write_bytes(f"{root}/d.jsonl.gz", gzip.compress(jsonl)[:-20])  # truncated upload

    expected = [(r["id"], r["text"], {"source": "udhr"}) for r in records]
    for name in ("b.jsonl.gz", "c.parquet"):
        docs = list(shards.read_documents(f"{root}/{name}"))
        assert [(d.id, d.text, d.meta) for d in docs] == expected, name

    items = list(shards.read_documents(f"{root}/a.jsonl"))
    assert [(d.id, d.text, d.meta) for d in items[:6]] == expected
    assert [(q.source, q.reason) for q in items[6:]] == [(f"{root}/a.jsonl:7", "invalid_json"),
                                                         (f"{root}/a.jsonl:8", "missing_text")]  # fmt: skip

    truncated = list(shards.read_documents(f"{root}/d.jsonl.gz"))
    assert isinstance(truncated[-1], shards.Quarantined) and truncated[-1].reason == "truncated_or_corrupt_file"

    out = f"s3://{bucket}/written/part.jsonl.gz"
    assert shards.write_documents(out, (d for d in shards.read_documents(f"{root}/c.parquet"))) == 6
    assert [(d.id, d.text, d.meta) for d in shards.iter_texts([out])] == expected


# ---- the clean step, input and output on S3 ---------------------------------------------------


def _put_jsonl(uri: str, records: list[dict | bytes], gz: bool = False) -> None:
    data = b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n"
                    for r in records)  # fmt: skip
    storage.write_bytes(uri, gzip.compress(data) if gz else data)


def test_clean_corpus_s3_to_s3_exact_counts(bucket, s3_env):
    inp, out = f"s3://{bucket}/corpus", f"s3://{bucket}/runs/r1/clean"
    s = SENTENCES
    _put_jsonl(f"{inp}/part-0.jsonl", [
        {"id": "a0", "text": s[0]}, {"id": "a1", "text": s[1]}, {"id": "a2", "text": "too short"},
        {"id": "a3", "text": "  " + s[0].replace(" ", "   ") + " "},  # normalises to a0: exact duplicate
        b"{broken json",
    ])  # fmt: skip
    _put_jsonl(f"{inp}/part-1.jsonl.gz", [{"id": f"b{i}", "text": t} for i, t in enumerate(s[1:], 1)], gz=True)
    storage.write_bytes(f"s3://{bucket}/corpus-old/stale.jsonl", b'{"text": "must not be read"}\n')

    result = clean_corpus(inp, out, CleanConfig(**BASIC, shard_max_records=3))
    stats = result.stats
    assert (stats.records_in, stats.kept) == (10, 6)
    assert stats.dropped == {"too_short": 1, "duplicate": 2}
    assert stats.quarantined == {"invalid_json": 1}

    assert result.manifest_uri == f"{out}/manifest.json"
    manifest = Manifest.load(result.manifest_uri)
    assert manifest.digest == result.manifest.digest and manifest.root == out
    assert [sh.uri for sh in manifest.shards] == [
        f"{out}/shards/part-00000-000.jsonl.gz",
        f"{out}/shards/part-00001-000.jsonl.gz",
        f"{out}/shards/part-00001-001.jsonl.gz",
    ]
    assert [sh.records for sh in manifest.shards] == [2, 3, 1]
    for sh in manifest.shards:
        data = storage.read_bytes(sh.uri)
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (sh.sha256, sh.bytes)
    docs = list(shards.iter_texts(sh.uri for sh in manifest.shards))
    assert sorted(d.text for d in docs) == sorted(s)
    assert json.loads(storage.read_text(f"{out}/stats.json"))["kept"] == 6
    quarantine = storage.read_text(f"{out}/quarantine/part-00000.jsonl")
    assert json.loads(quarantine)["source"] == f"{inp}/part-0.jsonl:5"
    assert storage.exists(f"{out}/dropped/too_short.jsonl")

    rerun = clean_corpus(inp, out, CleanConfig(**BASIC, shard_max_records=3))  # resumes from markers
    assert rerun.manifest.digest == manifest.digest


def test_clean_corpus_s3_to_s3_default_config(bucket, s3_env, tmp_path):
    udhr = list(read_json_lines(str(DATA / "udhr_articles.jsonl")))
    english = [r for r in udhr if r["lang_hint"] == "en"]  # 28 real UDHR sections
    edited = [{"id": f"{r['id']}-edit", "text": r["text"] + " Amended."} for r in english[6:9]]
    inp, out = f"s3://{bucket}/udhr", f"s3://{bucket}/runs/r2/clean"
    parts = [english[: len(english) // 2], english[len(english) // 2:] + english[:3] + edited]
    for where in (inp, str(tmp_path / "in")):
        _put_jsonl(f"{where}/part-0.jsonl", parts[0])
        _put_jsonl(f"{where}/part-1.jsonl.gz", parts[1], gz=True)

    result = clean_corpus(inp, out, CleanConfig())  # langid, quality, PII, near-dedup; 2 processes
    assert result.stats.records_in == len(english) + 6
    assert result.stats.dropped["duplicate"] == 3 and result.stats.dropped["near_duplicate"] == 3
    local = clean_corpus(str(tmp_path / "in"), str(tmp_path / "out"), CleanConfig())  # the same files on disk
    assert result.stats.model_dump() == local.stats.model_dump()
    manifest = Manifest.load(f"{out}/manifest.json")
    assert manifest.shards and all(sh.uri.startswith(f"{out}/shards/") for sh in manifest.shards)
    docs = list(shards.iter_texts(sh.uri for sh in manifest.shards))
    assert len(docs) == result.stats.kept == manifest.records
    assert all(d.meta.get("lang") for d in docs)


def test_clean_corpus_missing_s3_input_is_a_clean_error(bucket, s3_env):
    with pytest.raises(CleanError, match=f"s3://{bucket}/nope"):
        clean_corpus(f"s3://{bucket}/nope", f"s3://{bucket}/out", CleanConfig(**BASIC))


def test_retry_budget_must_be_seconds(monkeypatch):
    monkeypatch.setenv(storage.RETRY_ENV, "soon")
    with pytest.raises(storage.StorageError, match=f"{storage.RETRY_ENV}='soon': expected seconds"):
        storage.exists("s3://any-bucket/x")


def test_folder_markers_are_not_files(bucket, s3_env):
    client = s3_env.client()
    for key in ("corpus/", "corpus/sub/", "corpus/sub/a.jsonl"):
        client.put_object(Bucket=bucket, Key=key, Body=b"" if key.endswith("/") else b"{}")
    assert storage.list_files(f"s3://{bucket}/corpus") == [f"s3://{bucket}/corpus/sub/a.jsonl"]


def test_a_bad_endpoint_is_a_storage_error_naming_the_uri(monkeypatch, capfd):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:1")  # no scheme
    with pytest.raises(storage.StorageError, match=r"s3://b/k.json: cannot read \(.*Invalid endpoint"):
        storage.read_bytes("s3://b/k.json")
    assert "retrying" not in capfd.readouterr().err
