"""Faults injected for real: a size-limited disk while writing, manifests that point outside
their root. (Rank kills, SIGTERM, crashed cleaning workers, S3 resume and planted secrets are
tested beside the code they exercise; README "Reliability" lists them all.)"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.manifest import Manifest, shard_info

ROOT = Path(__file__).resolve().parents[2]

# The child caps every file it writes at LIMIT bytes (RLIMIT_FSIZE) and ignores SIGXFSZ, so an
# oversized write fails with EFBIG as a full disk fails with ENOSPC.
CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
from components.clean.clean import clean_corpus
from components.clean.config import CleanConfig
clean_corpus(sys.argv[1], sys.argv[2], CleanConfig(workers=1))
"""


def test_disk_full_while_cleaning_fails_clearly_and_leaves_nothing_truncated(demo_corpus, tmp_path):
    out = tmp_path / "clean"
    done = subprocess.run([sys.executable, "-c", CHILD, str(demo_corpus), str(out), "200000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    assert "cannot write (File too large); nothing partial was kept" in done.stderr, done.stderr[-2000:]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.endswith(".tmp")], "a temporary file was left behind"
    for path in written:  # whatever is there is whole
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                handle.read()
    assert not (out / "manifest.json").exists()  # no step downstream can mistake it for finished


def test_a_manifest_cannot_point_outside_its_root(tmp_path):
    root = tmp_path / "run" / "clean"
    (root / "shards").mkdir(parents=True)
    inside = root / "shards" / "part-0.jsonl"
    inside.write_text('{"text": "ok"}\n')
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text('{"text": "secret"}\n')
    link = root / "shards" / "link.jsonl"
    os.symlink(outside, link)

    Manifest(kind="documents", root=str(root), shards=[shard_info(str(inside), 1)]).save(str(tmp_path / "ok.json"))
    assert Manifest.load(str(tmp_path / "ok.json")).records == 1
    for name, uri in {"dotdot": f"{root}/shards/../../../elsewhere.jsonl", "absolute": str(outside),
                      "symlink": str(link)}.items():  # fmt: skip
        Manifest(kind="documents", root=str(root), shards=[shard_info(uri, 1)]).save(str(tmp_path / f"{name}.json"))
        with pytest.raises(ValueError, match="lies outside the manifest's root"):
            Manifest.load(str(tmp_path / f"{name}.json"))
