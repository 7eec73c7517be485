"""Read and write files addressed by URI: a local path (or file://) or s3://bucket/key.

Writes are atomic: a reader never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, TypeVar
from urllib.parse import urlparse


T = TypeVar("T")


class StorageError(RuntimeError):
    """A URI could not be read or written; the message names the URI."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    """The filesystem path of a local URI (plain path or file://)."""
    if is_s3(uri):
        raise StorageError(f"{uri}: expected a local path, got an s3:// URI")
    if uri.startswith("file://"):
        return Path(urlparse(uri).path)
    return Path(uri)


def join(uri: str, *parts: str) -> str:
    if is_s3(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(local_path(uri).joinpath(*parts))


def _s3_split(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


# what the S3 client is made from; read on every call, so a changed variable takes effect
_S3_ENV = (
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS",
)  # fmt: skip


S3_CONNECTIONS = 16  # connections an S3 client keeps: threads reading ranges at once (clean's dedup) each hold one
_CLIENT_LOCK = threading.Lock()


def _s3_client():
    # boto3.client() would reuse the default session, which keeps the first credentials it
    # resolved for the life of the process; a session per call costs ~150 ms. So: one client
    # per environment (and per process: connection pools do not survive a fork), made once
    # even when several threads ask at the same time.
    with _CLIENT_LOCK:
        return _s3_client_for(tuple(os.environ.get(name) for name in _S3_ENV), os.getpid())


@functools.lru_cache(maxsize=8)
def _s3_client_for(env: tuple[str | None, ...], pid: int):
    import boto3  # imported lazily: local runs never need it
    from botocore.config import Config

    # botocore retries a blip within a call (a few seconds at most); _s3 rides out longer
    # outages. AWS_RETRY_MODE / AWS_MAX_ATTEMPTS, when set, decide instead.
    retries = {} if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS") else {
        "retries": {"mode": "standard", "total_max_attempts": 3}
    }  # fmt: skip
    config = Config(connect_timeout=10, read_timeout=60, max_pool_connections=S3_CONNECTIONS, **retries)
    return boto3.session.Session().client("s3", endpoint_url=env[0] or None, config=config)


RETRY_ENV = "HOMEGROWN_S3_RETRY_S"  # how long one S3 operation keeps retrying transient failures
RETRY_DEFAULT_S = 120.0
_RETRYABLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}  # fmt: skip


def _transient(exc: BaseException) -> bool:
    """Worth retrying: the server could not be reached, dropped the connection, timed out, or
    answered 5xx / throttled. Not: wrong credentials, a missing bucket or key, a bad request."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, IncompleteReadError

    seen: BaseException | None = exc
    while seen is not None:  # s3transfer wraps a part's ClientError in S3UploadFailedError
        if isinstance(seen, (ConnectionError, HTTPClientError, IncompleteReadError)):
            return True
        if isinstance(seen, ClientError):
            error = seen.response.get("Error", {})
            status = seen.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return status >= 500 or str(error.get("Code")) in _RETRYABLE_CODES
        # a download whose own retries ran out (boto3 RetriesExceededError) keeps the cause aside
        seen = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
    return False


def _retry_budget() -> float:
    value = os.environ.get(RETRY_ENV) or str(RETRY_DEFAULT_S)
    try:
        budget = float(value)
    except ValueError:
        budget = -1.0
    if not 0 <= budget < float("inf"):
        raise StorageError(f"{RETRY_ENV}={value!r}: expected seconds (a number >= 0), e.g. {RETRY_DEFAULT_S:.0f}")
    return budget


def _s3(uri: str, action: str, call: Callable[[], T]) -> T:
    """Run one S3 operation. Transient failures are retried with exponential backoff (0.5 s
    doubling to 10 s) for up to $HOMEGROWN_S3_RETRY_S seconds (default 120): an S3 endpoint that
    restarts costs a step a pause, not the run. Anything else, or the budget spent, is a
    StorageError naming the URI."""
    budget = _retry_budget()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return call()
        except StorageError:
            raise
        except Exception as exc:  # botocore raises many types (and a bad endpoint a ValueError)
            delay = min(10.0, 0.5 * 2**attempt)
            elapsed = time.monotonic() - started
            if not _transient(exc):
                raise StorageError(f"{uri}: cannot {action} ({exc})") from exc
            if elapsed + delay > budget:
                raise StorageError(
                    f"{uri}: cannot {action} ({exc}); gave up after {attempt + 1} attempts over {elapsed:.0f} s. "
                    f"Check that the S3 endpoint is up, or give it longer with {RETRY_ENV}"
                ) from exc
            if attempt == 0:
                print(f"[storage] {uri}: {action} failed ({type(exc).__name__}); retrying for up to "
                      f"{budget:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
            time.sleep(delay)
            attempt += 1


def _s3_dir_prefix(key: str) -> str:
    """The listing prefix of the "directory" `key`: 'a/b' and 'a/b/' → 'a/b/' (not 'a/bc')."""
    return key if not key or key.endswith("/") else key + "/"


def _s3_has_key(client, bucket: str, key: str) -> bool:
    # the key itself sorts first among the keys it is a prefix of
    resp = client.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    return any(obj["Key"] == key for obj in resp.get("Contents", []))


def exists(uri: str) -> bool:
    """True for a file, or a directory (an S3 prefix followed by '/') holding at least one file."""
    if is_s3(uri):
        bucket, key = _s3_split(uri)

        def check() -> bool:
            client = _s3_client()
            if key and not key.endswith("/") and _s3_has_key(client, bucket, key):
                return True
            resp = client.list_objects_v2(Bucket=bucket, Prefix=_s3_dir_prefix(key), MaxKeys=1)
            return resp.get("KeyCount", 0) > 0

        return _s3(uri, "check", check)
    return local_path(uri).exists()


def within(uri: str, root: str) -> bool:
    """Whether uri names something under root: no `..`, same bucket/prefix on S3, and locally
    the resolved path (symlinks followed) inside the resolved root."""
    if is_s3(uri) != is_s3(root):
        return False
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        root_bucket, root_key = _s3_split(root)
        return bucket == root_bucket and ".." not in key.split("/") and key.startswith(_s3_dir_prefix(root_key))
    return local_path(uri).resolve().is_relative_to(local_path(root).resolve())


def fingerprint(uri: str) -> str:
    """A cheap identity of a file's current version: size and mtime locally, ETag on S3."""
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        head = _s3(uri, "stat", lambda: _s3_client().head_object(Bucket=bucket, Key=key))
        return f"{head['ContentLength']}-{head['ETag'].strip(chr(34))}"
    stat = local_path(uri).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def list_files(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files under a prefix/directory (or the file itself), sorted, filtered by suffix.

    On S3 a "directory" is `<uri>/`: s3://b/data lists s3://b/data/x, not s3://b/data-old/x.
    """
    if is_s3(uri):
        bucket, key = _s3_split(uri)

        def listing() -> list[str]:
            client = _s3_client()
            if key and not key.endswith("/") and _s3_has_key(client, bucket, key):
                return [key]
            paginator = client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=bucket, Prefix=_s3_dir_prefix(key))
            # "dir/" objects are folder markers (consoles, rclone), not files
            return [obj["Key"] for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]

        keys = _s3(uri, "list", listing)
        if not keys:
            raise StorageError(f"{uri}: no such file or directory")
        found = [f"s3://{bucket}/{k}" for k in keys]
    else:
        path = local_path(uri)
        if path.is_file():
            found = [str(path)]
        elif path.is_dir():
            found = [str(p) for p in path.rglob("*") if p.is_file()]
        else:
            raise StorageError(f"{uri}: no such file or directory")
    return sorted(f for f in found if not suffixes or f.endswith(suffixes))


def list_sizes(uri: str) -> list[tuple[str, int]]:
    """(file, size in bytes) for list_files(uri), in the same order: one listing on S3."""
    if is_s3(uri):
        bucket, key = _s3_split(uri)

        def listing() -> list[tuple[str, int]]:
            client = _s3_client()
            if key and not key.endswith("/") and _s3_has_key(client, bucket, key):
                return [(key, client.head_object(Bucket=bucket, Key=key)["ContentLength"])]
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_s3_dir_prefix(key))
            return [(obj["Key"], obj["Size"]) for page in pages for obj in page.get("Contents", []) if not obj["Key"].endswith("/")]

        found = _s3(uri, "list", listing)
        if not found:
            raise StorageError(f"{uri}: no such file or directory")
        return sorted((f"s3://{bucket}/{k}", size) for k, size in found)
    return [(f, local_path(f).stat().st_size) for f in list_files(uri)]


@contextlib.contextmanager
def open_read(uri: str, start: int = 0) -> Iterator[BinaryIO]:
    """The file's bytes from byte `start` on (an HTTP range request on S3)."""
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        extra = {"Range": f"bytes={start}-"} if start else {}
        body = _s3(uri, "read", lambda: _s3_client().get_object(Bucket=bucket, Key=key, **extra)["Body"])
        try:
            yield body
        finally:
            body.close()
    else:
        try:
            handle = open(local_path(uri), "rb")
        except OSError as exc:
            raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc
        with handle:
            if start:
                handle.seek(start)
            yield handle


@contextlib.contextmanager
def open_write(uri: str) -> Iterator[BinaryIO]:
    """Write to a temporary file and publish it under `uri` only if the block succeeds."""
    if is_s3(uri):
        # a named file, uploaded by name on each attempt: s3transfer closes a file object it was
        # given once a small upload fails, so a retry could not read it again
        fd, tmp_name = tempfile.mkstemp(prefix="homegrown-upload-")
        try:
            with os.fdopen(fd, "w+b") as tmp:
                yield tmp
            bucket, key = _s3_split(uri)
            _s3(uri, "write", functools.partial(_s3_upload_file, Path(tmp_name), bucket, key))
        finally:
            os.unlink(tmp_name)
        return
    path = local_path(uri)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError(f"{uri}: cannot write ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            # Disk full or over a size limit: say so, and that nothing half-written was left behind.
            raise StorageError(
                f"{uri}: cannot write ({exc.strerror}); nothing partial was kept. Free space (or raise the "
                "limit) and run the step again"
            ) from exc
        raise


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[Path]:
    """A local path holding the file: the file itself, or an S3 object streamed to a temporary
    file (removed afterwards) -- for readers that need a seekable file, without the whole
    object in memory."""
    if not is_s3(uri):
        path = local_path(uri)
        if not path.is_file():
            raise StorageError(f"{uri}: cannot read (no such file)")
        yield path
        return
    fd, name = tempfile.mkstemp(prefix="homegrown-download-")
    os.close(fd)
    try:
        bucket, key = _s3_split(uri)
        _s3(uri, "read", functools.partial(_s3_download_file, bucket, key, Path(name)))
        yield Path(name)
    finally:
        os.unlink(name)


def read_range(uri: str, start: int, length: int) -> bytes:
    """`length` bytes of the file from byte `start` (fewer at its end): one HTTP range request on S3."""
    if length <= 0:
        return b""
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        rng = f"bytes={start}-{start + length - 1}"
        return _s3(uri, "read", lambda: _s3_client().get_object(Bucket=bucket, Key=key, Range=rng)["Body"].read())
    try:
        with open(local_path(uri), "rb") as handle:
            handle.seek(start)
            return handle.read(length)
    except OSError as exc:
        raise StorageError(f"{uri}: cannot read ({exc.strerror})") from exc


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):  # the whole read is retried: a connection dropped mid-body too
        bucket, key = _s3_split(uri)
        return _s3(uri, "read", lambda: _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read())
    with open_read(uri) as handle:
        return handle.read()


def write_bytes(uri: str, data: bytes) -> None:
    with open_write(uri) as handle:
        handle.write(data)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def upload_dir(local_dir: str | Path, uri: str) -> None:
    """Copy a local directory tree to `uri` (a local directory or an s3:// prefix).

    On S3 each file is uploaded straight from disk (multipart and parallel for large ones)."""
    local_dir = Path(local_dir)
    if not is_s3(uri):
        dest = local_path(uri)
        if dest.resolve() != local_dir.resolve():
            shutil.copytree(local_dir, dest, dirs_exist_ok=True)
        return
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        file_uri = join(uri, str(file.relative_to(local_dir)))
        bucket, key = _s3_split(file_uri)
        _s3(file_uri, "write", functools.partial(_s3_upload_file, file, bucket, key))


def download_dir(uri: str, local_dir: str | Path, skip_existing: bool = False) -> Path:
    """Make the tree under `uri` available locally; local URIs are used in place.

    Files stream to disk (a temporary name, renamed when complete), never through memory.
    skip_existing: leave files that are already there (same relative path) alone."""
    if not is_s3(uri):
        return local_path(uri)
    local_dir = Path(local_dir)
    prefix = uri.rstrip("/") + "/"
    for file_uri in list_files(prefix):
        target = local_dir / file_uri[len(prefix):]
        if skip_existing and target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        bucket, key = _s3_split(file_uri)
        _s3(file_uri, "read", functools.partial(_s3_download_file, bucket, key, partial))
        os.replace(partial, target)
    return local_dir


def _s3_upload_file(file: Path, bucket: str, key: str) -> None:
    _s3_client().upload_file(str(file), bucket, key)


def _s3_download_file(bucket: str, key: str, target: Path) -> None:
    _s3_client().download_file(bucket, key, str(target))


def remove_file(uri: str) -> None:
    """Delete one file or object; a missing one is not an error."""
    if not is_s3(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    bucket, key = _s3_split(uri)
    _s3(uri, "delete", lambda: _s3_client().delete_object(Bucket=bucket, Key=key))


def remove_tree(uri: str) -> None:
    """Delete everything under a directory or s3:// prefix; nothing there is not an error."""
    if not is_s3(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    bucket, key = _s3_split(uri)

    def delete() -> None:  # a retry lists again: what was deleted is gone from the listing
        client = _s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_s3_dir_prefix(key))
        for page in pages:
            objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})

    _s3(uri, "delete", delete)
