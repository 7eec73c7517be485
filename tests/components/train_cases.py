"""Several training runs in one torchrun launch: each rank calls the real worker.main once per
case, in order, so a matrix of configs costs one process start-up and one rendezvous.

The only difference from separate launches: the process group outlives each run (worker.main
would destroy it, and DeepSpeed caches its groups, so a second init in the same process fails);
it is destroyed once at the end. A case that raises is recorded in NAME/error.txt (rank 0) and
the next case runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from components.train.config import ModelConfig, TrainConfig
from components.train.launch import worker_env
from components.train.run_config import write_worker_config

ROOT = Path(__file__).resolve().parents[2]


def case(name: str, train: TrainConfig, model: ModelConfig, mlflow_run_id: str | None = None,
         copy_from: str | None = None, copy_tag: str | None = None,
         drop_files: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """One run, output under ROOT/name. copy_from/copy_tag: before it starts, the earlier case's
    checkpoint tag is copied in as the one to resume (as if that run had died after it), less
    the files named in drop_files (e.g. a tag as an older version wrote it)."""
    return {"name": name, "train": train.model_dump(), "model": model.model_dump(), "mlflow_run_id": mlflow_run_id,
            "copy_from": copy_from, "copy_tag": copy_tag, "drop_files": list(drop_files)}  # fmt: skip


def launch_cases(cases: list[dict[str, Any]], manifest_uri: str, root: Path, world: int,
                 env: dict[str, str] | None = None, timeout: float = 600) -> str:  # fmt: skip
    """Run the cases under `torchrun --nproc_per_node=world`; returns the launch's output."""
    root.mkdir(parents=True, exist_ok=True)
    plan = root / "cases.json"
    plan.write_text(json.dumps(cases))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
               __file__, str(plan), manifest_uri, str(root)]  # fmt: skip
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, env=worker_env({"PYTHONPATH": pythonpath, **(env or {})}), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    return output


def _run(plan: Path, manifest_uri: str, root: Path) -> None:
    import shutil

    import torch

    from components.train import worker

    destroy = torch.distributed.destroy_process_group
    torch.distributed.destroy_process_group = lambda *args, **kwargs: None
    rank = int(os.environ["RANK"])
    for spec in json.loads(plan.read_text()):
        out = root / spec["name"]
        if rank == 0 and spec["copy_from"]:  # only rank 0 picks the tag to resume; the others wait for it
            source = root / spec["copy_from"] / "checkpoints"
            shutil.copytree(source / spec["copy_tag"], out / "checkpoints" / spec["copy_tag"])
            for name in spec["drop_files"]:
                (out / "checkpoints" / spec["copy_tag"] / name).unlink()
            (out / "checkpoints" / "latest").write_text(spec["copy_tag"])
        config = root / f"{spec['name']}-rank{rank}.json"
        train, model = TrainConfig.model_validate(spec["train"]), ModelConfig.model_validate(spec["model"])
        write_worker_config(str(config), train, model)
        os.environ.pop("MLFLOW_RUN_ID", None)
        if spec["mlflow_run_id"]:
            os.environ["MLFLOW_RUN_ID"] = spec["mlflow_run_id"]
        try:
            worker.main(["--data", manifest_uri, "--output", str(out), "--config", str(config)])
        except Exception as exc:  # every rank raises alike (config checks run on every rank)
            if rank == 0:
                out.mkdir(parents=True, exist_ok=True)
                (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}")
            torch.distributed.barrier()
    destroy()


if __name__ == "__main__":
    _run(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
