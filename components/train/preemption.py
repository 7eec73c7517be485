"""Preemption: SIGTERM (a node reclaimed, a pod evicted) makes every rank checkpoint at the
next step boundary and exit with PREEMPTED_EXIT; run again with the same output to resume."""

from __future__ import annotations

import signal
import time

import torch

# Exit status of a rank that saved a checkpoint after SIGTERM (EX_TEMPFAIL: run it again to resume).
PREEMPTED_EXIT = 75


class Preemption:
    """SIGTERM sets a flag; `agreed()` at a step boundary tells every rank whether any rank got it.

    `grace_s` is what the launcher allows between SIGTERM and SIGKILL; `warn_if_too_slow()` says (once) when
    a step plus a checkpoint save takes longer than that, so the save would be cut off."""

    def __init__(self) -> None:
        self.signalled_at: float | None = None
        self.grace_s: float | None = None
        self.warned = False
        signal.signal(signal.SIGTERM, self._handle)

    @property
    def signalled(self) -> bool:
        return self.signalled_at is not None

    def _handle(self, signum, frame) -> None:
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()

    def left_s(self) -> float | None:
        """Seconds of the grace period left, if signalled and the grace is known."""
        if self.signalled_at is None or self.grace_s is None:
            return None
        return self.grace_s - (time.monotonic() - self.signalled_at)

    def warn_if_too_slow(self, step_s: float, save_s: float) -> None:
        """save_s: writing a checkpoint, and uploading it where the output is remote."""
        if self.grace_s is None or step_s + save_s <= self.grace_s:
            return
        if not self.warned:
            self.warned = True
            print(f"[train] warning: a step ({step_s:.1f} s) and a checkpoint save ({save_s:.1f} s) take longer than "
                  f"train.preemption_grace_s ({self.grace_s:.0f} s): on preemption the save would be cut off and the "
                  "previous checkpoint resumed. Raise preemption_grace_s (and the pod's terminationGracePeriodSeconds)",
                  flush=True)  # fmt: skip

    def agreed(self) -> bool:
        """Whether any rank got SIGTERM: an all-reduce, so every rank calls it at the same step."""
        flag = torch.tensor([1 if self.signalled else 0], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and self.signalled_at is None:  # another rank got it: count the grace from now
            self.signalled_at = time.monotonic()
        return bool(flag.item())
