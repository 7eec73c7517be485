"""Progress of a long task a person can follow in its log: documents and bytes per second, the
share of its input done and an ETA, printed every `every_s` seconds (and once at the end).

    progress = Progress("clean: unit 3", total_bytes=5_000_000_000)
    progress.advance(len(text.encode()))   # per record
    progress.done()

Bytes are those of the records read (text for documents, the raw line for quarantined ones), so
for plain JSONL the share done tracks the file; for gzip/zstd input it runs ahead of the
compressed size, and the share is capped at 99 % until the task ends.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


@dataclass
class Progress:
    label: str
    total_bytes: int
    every_s: float = 30.0
    docs: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _last: float = field(default_factory=time.monotonic)

    def advance(self, n_bytes: int) -> None:
        self.docs += 1
        self.bytes += n_bytes
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            print(self.line(now), file=sys.stderr, flush=True)

    def line(self, now: float | None = None) -> str:
        """`label: N docs, X MB (p %), d docs/s, b MB/s, ETA`."""
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        share = min(self.bytes / self.total_bytes, 0.99) if self.total_bytes else 0.0
        eta = f", ETA {_eta(elapsed * (1 - share) / share)}" if share > 0 else ""
        return (f"{self.label}: {self.docs:,} docs, {self.bytes / 1e6:,.1f} MB ({share:.0%}), "
                f"{self.docs / elapsed:,.0f} docs/s, {self.bytes / 1e6 / elapsed:,.2f} MB/s{eta}")  # fmt: skip

    def done(self) -> dict[str, float]:
        """Print the final line; returns {"seconds", "docs_per_s", "bytes_per_s"}."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        print(f"{self.label}: done, {self.docs:,} docs, {self.bytes / 1e6:,.1f} MB in {elapsed:,.1f} s "
              f"({self.docs / elapsed:,.0f} docs/s, {self.bytes / 1e6 / elapsed:,.2f} MB/s)", file=sys.stderr, flush=True)  # fmt: skip
        return {"seconds": elapsed, "docs_per_s": self.docs / elapsed, "bytes_per_s": self.bytes / elapsed}
