"""The MLflow Model Registry side of the pipeline: log, register, gate, promote.

The model is logged with the transformers flavor (safetensors, tokenizer included,
explicit pip requirements) and registered with alias `candidate`. `champion` moves only
when the gate passes; consumers load `models:/<name>@champion`.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components import storage
from components.hf_model import ModelDirError, context_length, flatten_flavor
from components.register.config import RegisterConfig

CANDIDATE = "candidate"
CHAMPION = "champion"
GATE_METRIC = "bits_per_byte"  # lower is better; tokenizer-independent, so models compare fairly


class RegistryError(RuntimeError):
    pass


@dataclass
class GateDecision:
    passed: bool
    reason: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "passed" if self.passed else "failed"

    def markdown(self) -> str:
        lines = ["| check | champion | challenger | threshold | result |", "|---|---|---|---|---|"]
        for r in self.rows:
            fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
            lines.append(
                f"| {r['check']} | {fmt(r['champion'])} | {fmt(r['challenger'])} | {fmt(r['threshold'])} | "
                f"{'pass' if r['passed'] else 'FAIL'} |"
            )
        return "\n".join(lines) + f"\n\n**Gate: {self.status}** — {self.reason}\n"


def decide(challenger_bpb: float, champion_bpb: float | None, config: RegisterConfig) -> GateDecision:
    """Promote when the challenger beats the champion on the same frozen set by the margin."""
    rows: list[dict[str, Any]] = []
    if config.max_bits_per_byte is not None:
        ok = challenger_bpb <= config.max_bits_per_byte
        rows.append(dict(check=f"{GATE_METRIC} <= ceiling", champion=None, challenger=challenger_bpb,
                         threshold=config.max_bits_per_byte, passed=ok))
    if champion_bpb is None:
        rows.append(dict(check="champion exists", champion=None, challenger=challenger_bpb, threshold=None, passed=True))
    else:
        threshold = champion_bpb * (1 - config.min_improvement)
        rows.append(dict(check=f"{GATE_METRIC} < champion x (1 - {config.min_improvement})",
                         champion=champion_bpb, challenger=challenger_bpb, threshold=threshold,
                         passed=challenger_bpb < threshold))
    failed = [r["check"] for r in rows if not r["passed"]]
    if failed:
        return GateDecision(False, "failed: " + "; ".join(failed), rows)
    if champion_bpb is None:
        return GateDecision(True, "no champion yet: the first model becomes champion", rows)
    return GateDecision(True, f"{GATE_METRIC} {challenger_bpb:.4f} beats champion {champion_bpb:.4f}", rows)


def pip_requirements() -> list[str]:
    pins = []
    for dist in ("torch", "transformers", "tokenizers", "safetensors", "accelerate"):
        try:
            version = importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            continue
        pins.append(f"{dist}=={version}")
    return pins


def log_and_register(model_uri: str, config: RegisterConfig, tags: dict[str, str]) -> str:
    """Log the HF model dir into the active run and register it; returns the new version."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = storage.download_dir(model_uri, tmp)
        model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        # the pipeline's default generation must fit the context, or the signature probe fails
        max_new = min(32, context_length(model) // 2)
        model.generation_config.max_new_tokens = max_new
        model.generation_config.max_length = None
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task="text-generation",
            pip_requirements=pip_requirements(),
            input_example="The",
            inference_config={"max_new_tokens": max_new, "do_sample": False},
            registered_model_name=config.model_name,
        )
    version = str(info.registered_model_version)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(config.model_name, version, key, str(value))
    client.set_registered_model_alias(config.model_name, CANDIDATE, version)
    return version


def champion_version(name: str) -> Any | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None  # no registered model or no champion alias yet


def promote(name: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def champion_model_dir(name: str, dest: str | Path) -> tuple[Path, str] | None:
    """Download the current champion as a plain HF model directory; None if there is none."""
    import mlflow

    current = champion_version(name)
    if current is None:
        return None
    dest = Path(dest)
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@{CHAMPION}", dst_path=str(dest / "mlflow")))
    try:
        out = flatten_flavor(downloaded, dest / "hf", f"models:/{name}@{CHAMPION} (version {current.version})")
    except ModelDirError as exc:
        raise RegistryError(str(exc)) from exc
    return out, str(current.version)
