"""Read and write files addressed by URI: a local path (or file://) or s3://bucket/key.

Writes are atomic: a reader never sees a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator
from urllib.parse import urlparse


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
)  # fmt: skip


def _s3_client():
    # boto3.client() would reuse the default session, which keeps the first credentials it
    # resolved for the life of the process; a session per call costs ~150 ms. So: one client
    # per environment (and per process: connection pools do not survive a fork).
    return _s3_client_for(tuple(os.environ.get(name) for name in _S3_ENV), os.getpid())


@functools.lru_cache(maxsize=8)
def _s3_client_for(env: tuple[str | None, ...], pid: int):
    import boto3  # imported lazily: local runs never need it

    return boto3.session.Session().client("s3", endpoint_url=env[0] or None)


@contextlib.contextmanager
def _s3_errors(uri: str, action: str) -> Iterator[None]:
    """botocore/s3transfer errors (auth, missing bucket, 5xx) as a StorageError naming the URI."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:  # botocore raises many types; the message is what matters
        if type(exc).__module__.split(".")[0] not in ("botocore", "boto3", "s3transfer"):
            raise
        raise StorageError(f"{uri}: cannot {action} ({exc})") from exc


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
        with _s3_errors(uri, "check"):
            client = _s3_client()
            if key and not key.endswith("/") and _s3_has_key(client, bucket, key):
                return True
            resp = client.list_objects_v2(Bucket=bucket, Prefix=_s3_dir_prefix(key), MaxKeys=1)
            return resp.get("KeyCount", 0) > 0
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
        with _s3_errors(uri, "stat"):
            head = _s3_client().head_object(Bucket=bucket, Key=key)
        return f"{head['ContentLength']}-{head['ETag'].strip(chr(34))}"
    stat = local_path(uri).stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def list_files(uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files under a prefix/directory (or the file itself), sorted, filtered by suffix.

    On S3 a "directory" is `<uri>/`: s3://b/data lists s3://b/data/x, not s3://b/data-old/x.
    """
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        with _s3_errors(uri, "list"):
            client = _s3_client()
            if key and not key.endswith("/") and _s3_has_key(client, bucket, key):
                keys = [key]
            else:
                paginator = client.get_paginator("list_objects_v2")
                keys = [
                    obj["Key"]
                    for page in paginator.paginate(Bucket=bucket, Prefix=_s3_dir_prefix(key))
                    for obj in page.get("Contents", [])
                ]
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


@contextlib.contextmanager
def open_read(uri: str) -> Iterator[BinaryIO]:
    if is_s3(uri):
        bucket, key = _s3_split(uri)
        try:
            body = _s3_client().get_object(Bucket=bucket, Key=key)["Body"]
        except Exception as exc:  # botocore raises many types; the message is what matters
            raise StorageError(f"{uri}: cannot read ({exc})") from exc
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
            yield handle


@contextlib.contextmanager
def open_write(uri: str) -> Iterator[BinaryIO]:
    """Write to a temporary file and publish it under `uri` only if the block succeeds."""
    if is_s3(uri):
        with tempfile.TemporaryFile() as tmp:
            yield tmp
            tmp.seek(0)
            bucket, key = _s3_split(uri)
            with _s3_errors(uri, "write"):
                _s3_client().upload_fileobj(tmp, bucket, key)  # multipart above 8 MB
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


def read_bytes(uri: str) -> bytes:
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
        with _s3_errors(file_uri, "write"):
            _s3_client().upload_file(str(file), bucket, key)


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
        with _s3_errors(file_uri, "read"):
            _s3_client().download_file(bucket, key, str(partial))
        os.replace(partial, target)
    return local_dir


def remove_file(uri: str) -> None:
    """Delete one file or object; a missing one is not an error."""
    if not is_s3(uri):
        local_path(uri).unlink(missing_ok=True)
        return
    bucket, key = _s3_split(uri)
    with _s3_errors(uri, "delete"):
        _s3_client().delete_object(Bucket=bucket, Key=key)


def remove_tree(uri: str) -> None:
    """Delete everything under a directory or s3:// prefix; nothing there is not an error."""
    if not is_s3(uri):
        shutil.rmtree(local_path(uri), ignore_errors=True)
        return
    bucket, key = _s3_split(uri)
    with _s3_errors(uri, "delete"):
        client = _s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=_s3_dir_prefix(key))
        for page in pages:
            objects = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if objects:
                client.delete_objects(Bucket=bucket, Delete={"Objects": objects, "Quiet": True})
