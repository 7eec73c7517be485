"""Launch the worker on this machine: `torch.distributed.run --standalone` as a subprocess.

    result = train_local("TOK/manifest.json", "OUT", TrainConfig(...), ModelConfig(...))

The same worker runs unchanged under a Kubeflow TrainJob / PyTorchJob (the launcher sets
RANK/WORLD_SIZE/...); this module is the local and in-pipeline single-node path.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from components import storage
from components.train.config import ModelConfig, TrainConfig
from components.train.ds_config import check_precision
from components.train.result import TrainResult
from components.train.run_config import write_worker_config

TAIL_LINES = 40
# A Python exception's last traceback line, e.g. "ValueError: seq_len (32) exceeds ...".
# torch prefixes a rank's stderr with "[rankN]: ".
EXCEPTION_LINE = re.compile(r"^(\[rank\d+\]:\s*)?[A-Za-z_][\w.]*(Error|Exception|Interrupt): ")
# The worker's line when SIGTERM stopped it after writing a checkpoint (exit status 75).
PREEMPTED_LINE = re.compile(r"^(\[rank\d+\]:\s*)?\[train\] preempted at step \d+")
STEP_LINE = re.compile(r"^\[train\] step (\d+)/(\d+) ")


class TrainError(RuntimeError):
    """The training processes failed: the exit code, the ranks' exception lines (torchrun's
    own report buries them) and the last lines of output."""

    def __init__(self, returncode: int, tail: list[str], errors: list[str] | None = None):
        self.returncode = returncode
        self.tail = tail
        self.errors = errors or []
        # SIGTERM stopped it after a checkpoint: train_local again with the same output resumes
        self.preempted = any(PREEMPTED_LINE.match(e) for e in self.errors)
        cause = "".join(f"  {e}" for e in self.errors) or "  (no Python exception seen; see output)\n"
        super().__init__(
            f"training failed with exit code {returncode}:\n{cause}last output:\n" + "".join(tail)
        )


class Progress:
    """A progress bar on a terminal, moved by the worker's step lines; other lines print above it."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="step", dynamic_ncols=True)

    def show(self, line: str) -> None:
        if m := STEP_LINE.match(line):
            self.bar.update(int(m.group(1)) - self.bar.n)
        self.bar.write(line.rstrip("\n"))

    def close(self) -> None:
        self.bar.close()


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def worker_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the ranks run in: ours, CPU defaults, then the caller's overrides."""
    merged = dict(os.environ)
    if not has_cuda():
        merged["DS_ACCELERATOR"] = "cpu"
    # One thread per rank, or the ranks fight over the cores.
    merged.setdefault("OMP_NUM_THREADS", "1")
    merged.setdefault("TORCH_EXTENSIONS_DIR", str(Path.cwd() / ".cache" / "torch_extensions"))
    merged.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    merged["PYTHONUNBUFFERED"] = "1"
    merged.update(env or {})
    return merged


@contextlib.contextmanager
def forward_sigterm(process: subprocess.Popen) -> Iterator[None]:
    """SIGTERM to this process (a preempted pod) goes on to torchrun, which passes it to the
    ranks; they checkpoint and exit, and train_local reports the run as preempted. Only from
    the main thread, where Python can install a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def torchrun_args(train: TrainConfig) -> list[str]:
    """torchrun's options for one node: its ranks, and (on SIGTERM torchrun signals the ranks,
    then SIGKILLs them) the grace they get to checkpoint, instead of torchrun's 30 s."""
    return ["--standalone", f"--nproc_per_node={train.nproc_per_node}", f"--shutdown-timeout={train.preemption_grace_s}"]


def train_local(
    data_manifest_uri: str,
    output_uri: str,
    train: TrainConfig,
    model: ModelConfig,
    env: dict[str, str] | None = None,
) -> TrainResult:
    """Train with `train.nproc_per_node` ranks on this machine; raises TrainError on failure, and
    ValueError before launching anything for a precision this machine cannot train in."""
    if not has_cuda():
        check_precision(train.precision, "cpu")
    with tempfile.TemporaryDirectory(prefix="homegrown-train-cfg-") as tmp:
        config_path = Path(tmp) / "train.json"
        write_worker_config(str(config_path), train, model)
        command = [
            sys.executable, "-m", "torch.distributed.run", *torchrun_args(train), "-m", "components.train.worker",
            "--data", data_manifest_uri, "--output", output_uri, "--config", str(config_path),
        ]  # fmt: skip
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        process = subprocess.Popen(
            command,
            env=worker_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert process.stdout is not None
        errors: list[str] = []
        progress = Progress(train.max_steps) if sys.stdout.isatty() else None
        with forward_sigterm(process):
            for line in process.stdout:
                if progress:
                    progress.show(line)
                else:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                tail.append(line)
                matched = EXCEPTION_LINE.match(line) or PREEMPTED_LINE.match(line)
                if matched and "ChildFailedError" not in line and line not in errors:
                    errors.append(line)
            returncode = process.wait()
        if progress:
            progress.close()
    if returncode != 0:
        raise TrainError(returncode, list(tail), errors)
    return TrainResult.model_validate_json(storage.read_text(storage.join(output_uri, "result.json")))
