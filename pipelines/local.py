"""Run the DAG on this machine with kfp's local SubprocessRunner, then summarise it from MLflow."""

from __future__ import annotations

import builtins
import collections
import contextlib
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from components import storage, mlflow_runs
from components.clean.clean import input_shards
from pipelines.config import ConfigError, RunConfig
from pipelines.dag import build_pipeline
from pipelines.steps.start import new_run_name

LOCAL_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_OFFLINE": "1",  # nothing is fetched from a model hub at run time
    "TOKENIZERS_PARALLELISM": "false",
}


class PipelineFailed(RuntimeError):
    pass


class ConsoleFilter(io.TextIOBase):
    """kfp's local runner prints every task's full executor log; keep all of it in a file and
    show the console only progress lines, plus the tail of any task that fails."""

    SHOW = re.compile(r"Task .* finished with status|Pipeline .* finished with status|\[homegrown\]|\[train\] (step|world|tokens)")
    EXCEPTION = re.compile(r"^\s*[\w.]+(Error|Exception|Failed)\b.*: ")
    NOISE = re.compile(r'^\s*("|[{}\[\],]+\s*$)')  # the executor's JSON dumps

    def __init__(self, console: TextIO | None, log: TextIO, show_all: bool = False, tail_lines: int = 40) -> None:
        self.console = console or io.StringIO()  # None: the log file only
        self.log, self.show_all = log, show_all
        self.pending = ""
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.failures: list[str] = []  # the exception lines of failed tasks

    def write(self, text: str) -> int:
        self.log.write(text)
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        if "finished with status" in line and "FAILURE" in line:
            self.failures += [t.strip() for t in self.tail if self.EXCEPTION.match(t)][-1:]
            if not self.show_all:
                self.console.write("".join(f"  | {t}\n" for t in self.tail))
        if self.show_all or self.SHOW.search(line):
            self.console.write(line + "\n")
            self.tail.clear()
        elif line.strip() and not self.NOISE.match(line):
            self.tail.append(line)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()


@dataclass
class RunSummary:
    run_name: str
    tracking_uri: str  # as shown to people: credentials masked (mlflow_runs.redact_uri)
    parent_run_id: str
    experiment_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return f"{self.tags.get('homegrown.registered_model', '?')} v{self.tags.get('homegrown.model_version', '?')}"


def check_local_run(config: RunConfig) -> None:
    """Fail before starting anything when the corpus or the instruction data is obviously unusable."""
    for key, uri in (("corpus", config.corpus), ("sft.data", config.sft.data if config.sft else None)):
        if uri is None:
            continue
        try:
            input_shards(uri)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None


def run_local(
    config: RunConfig,
    run_name: str | None = None,
    tracking_uri: str | None = None,
    data_root: str | None = None,
    work_dir: str | Path = "runs",
    verbose: bool | None = False,
) -> RunSummary:
    """Run the DAG locally. verbose: True shows kfp's full log, False a filtered console (the
    full log goes to <work_dir>/logs/), None writes the log file only."""
    check_local_run(config)
    work_dir = Path(work_dir).resolve()
    uri = mlflow_runs.resolve_tracking_uri(tracking_uri or config.mlflow.tracking_uri)
    if not uri.startswith("sqlite:") and "://" not in uri:
        raise ConfigError(f"mlflow.tracking_uri: {mlflow_runs.redact_uri(uri)!r} is not a URI (sqlite:///path.db or "
                          "http://host:port)")  # fmt: skip
    root = data_root or config.data_root
    if not storage.is_s3(root):
        root = str(Path(root).resolve())
    name = run_name or new_run_name(config)
    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    tmp = work_dir / "tmp"  # each local task leaves a temp dir behind; keep them together
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = str(tmp)

    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "kfp"))
    pipeline = build_pipeline(config, "local")
    failure = None
    log_path = work_dir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[homegrown] pipeline run {name}: full log in {log_path}")
    original_print = builtins.print  # kfp indents task output by swapping print; not always back
    with open(log_path, "w", encoding="utf-8") as log:
        stream = ConsoleFilter(sys.stdout if verbose is not None else None, log, show_all=bool(verbose))
        try:
            with contextlib.redirect_stdout(stream), warnings.catch_warnings():
                # kfp's notes that images and display names don't apply to a local run
                warnings.filterwarnings("ignore", message=".*(no effect in the current local runner|non-Python base image)")
                pipeline(config_json=config.model_dump_json(), run_name=name, tracking_uri=uri, data_root=root)
        except RuntimeError as exc:
            failure = exc
        finally:
            builtins.print = original_print
            stream.flush()
    summary = summarize(uri, config.mlflow.experiment, name)
    if failure is not None:
        cause = "; ".join(stream.failures) or "see the task's log above"
        raise PipelineFailed(f"pipeline run {name} failed: {_plain(str(failure))}\n  {cause}\n  full log: {log_path}")
    return summary


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def summarize(tracking_uri: str, experiment: str, run_name: str) -> RunSummary:
    from mlflow.tracking import MlflowClient

    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, experiment)
    runs = MlflowClient(tracking_uri).search_runs(
        [experiment_id], filter_string=f"tags.`homegrown.run_name` = '{run_name}'", max_results=1
    )
    shown = mlflow_runs.redact_uri(tracking_uri)
    if not runs:
        return RunSummary(run_name, shown, "", experiment_id, "MISSING")
    run = runs[0]
    return RunSummary(
        run_name, shown, run.info.run_id, experiment_id, run.info.status,
        dict(run.data.metrics), dict(run.data.tags),
    )  # fmt: skip
