"""The MLflow Model Registry side of the pipeline: log, register, gate, promote.

The model is logged with the transformers flavor (safetensors, tokenizer included,
explicit pip requirements) and registered with alias `candidate`. `champion` moves only
when the gate passes; consumers load `models:/<name>@champion`.

What the logged model answers through `mlflow.pyfunc` (greedy; `max_new_tokens` capped to half
the model's context):
- a chat model (its tokenizer has a `chat_template`): MLflow's `llm/v1/chat` task. predict takes
  `{"messages": [{"role": ..., "content": ...}, ...]}` (optionally `"max_tokens"`), renders it with
  the model's own template (`apply_chat_template(..., add_generation_prompt=True)`), and answers in
  the chat schema: `[{"choices": [{"message": {"role": "assistant", "content": ...},
  "finish_reason": "stop" | "length"}], "usage": {...}, ...}]`. Generation stops at the eos ids of
  the model's generation_config.json (the SFT step puts the template's end-of-turn token there); the
  content is the reply decoded without special tokens, leading whitespace stripped (MLflow's).
- a base model: the `text-generation` task; predict takes prompts and returns prompt + continuation.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from components import storage, mlflow_runs
from components.hf_model import ModelDirError, context_length, flatten_flavor
from components.register.config import RegisterConfig

CANDIDATE = "candidate"
CHAMPION = "champion"
DIGEST_TAG = "digest.model"  # sha256 of the weights: the version's identity
LEGACY_DIGEST_TAG = "model_digest"  # what versions registered before 0.2 carry
CHAT_TASK = "llm/v1/chat"  # MLflow's chat schema over a transformers text-generation pipeline
BASE_TASK = "text-generation"
CHAT_MAX_NEW_TOKENS = 256  # a reply's default length through pyfunc; a request's max_tokens overrides it
BASE_MAX_NEW_TOKENS = 32
GATE_METRIC = "bits_per_byte"  # lower is better; tokenizer-independent, so models compare fairly
RERUN = "rerun the step"
RERUN_REGISTER = "rerun the register step: it completes a half-registered version instead of adding another"


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


def decide(
    challenger_bpb: float,
    champion_bpb: float | None,
    config: RegisterConfig,
    challenger_languages: dict[str, float] | None = None,
    champion_languages: dict[str, float] | None = None,
    champion_unscored: str | None = None,
) -> GateDecision:
    """Promote when the challenger beats the champion on the same frozen set by the margin
    (and, if configured, no language's bits-per-byte regresses by more than the limit).

    champion_unscored: why a champion exists but has no figures to compare against (e.g. the
    results hold no score for it); the gate then fails with that reason, never passing as
    "no champion yet"."""
    rows: list[dict[str, Any]] = []
    if config.max_bits_per_byte is not None:
        ok = challenger_bpb <= config.max_bits_per_byte
        rows.append(dict(check=f"{GATE_METRIC} <= ceiling", champion=None, challenger=challenger_bpb,
                         threshold=config.max_bits_per_byte, passed=ok))
    if champion_unscored is not None:
        rows.append(dict(check="the current champion scored on this set", champion=None, challenger=challenger_bpb,
                         threshold=None, passed=False))
    elif champion_bpb is None:
        rows.append(dict(check="champion exists", champion=None, challenger=challenger_bpb, threshold=None, passed=True))
    else:
        threshold = champion_bpb * (1 - config.min_improvement)
        rows.append(dict(check=f"{GATE_METRIC} < champion x (1 - {config.min_improvement})",
                         champion=champion_bpb, challenger=challenger_bpb, threshold=threshold,
                         passed=challenger_bpb < threshold))
    if config.max_language_regression is not None and champion_languages and challenger_languages:
        limit = config.max_language_regression
        for lang in sorted(set(champion_languages) & set(challenger_languages)):
            before, after = champion_languages[lang], challenger_languages[lang]
            rows.append(dict(check=f"{GATE_METRIC}[{lang}] <= champion x (1 + {limit})", champion=before,
                             challenger=after, threshold=before * (1 + limit), passed=after <= before * (1 + limit)))
    failed = [r["check"] for r in rows if not r["passed"]]
    if failed:
        return GateDecision(False, "failed: " + "; ".join(failed) + (f" ({champion_unscored})" if champion_unscored
                                                                      else ""), rows)  # fmt: skip
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


def weights_digest(model_dir: Path) -> str:
    """sha256 over the model's safetensors files (names and bytes): the model's identity."""
    h = hashlib.sha256()
    for file in sorted(model_dir.glob("*.safetensors")):
        h.update(file.name.encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _server(doing: str, then: str = RERUN) -> Iterator[None]:
    """Registry calls fail within seconds, naming the server, when it does not answer."""
    import mlflow

    with mlflow_runs.explain_outage(mlflow.get_tracking_uri(), doing, then), mlflow_runs.fail_fast():
        yield


def versions_with_digest(name: str, digest: str) -> list[Any]:
    """The registered versions of these exact weights, oldest first."""
    from mlflow.tracking import MlflowClient

    found = [v for v in MlflowClient().search_model_versions(f"name = '{name}'")
             if digest in (v.tags.get(DIGEST_TAG), v.tags.get(LEGACY_DIGEST_TAG))]  # fmt: skip
    return sorted(found, key=lambda v: int(v.version))


def version_with_digest(name: str, digest: str) -> Any | None:
    """The registered version of these exact weights, if there is one."""
    found = versions_with_digest(name, digest)
    return found[0] if found else None


def _one_version(name: str, digest: str, created: str) -> str:
    """The oldest version of these weights; later ones are removed. MLflow's HTTP client retries
    a POST whose answer was lost, which can register the same weights twice in one call."""
    from mlflow.tracking import MlflowClient

    versions = versions_with_digest(name, digest) or [None]
    keep = str(versions[0].version) if versions[0] is not None else created
    for extra in versions[1:]:
        print(f"[register] version {extra.version} of {name!r} repeats version {keep} (a retried request): removed")
        MlflowClient().delete_model_version(name, str(extra.version))
    return keep


def is_chat_model(tokenizer: Any) -> bool:
    """Whether a tokenizer carries a chat template (one, or several named ones)."""
    return bool(getattr(tokenizer, "chat_template", None))


def logged_model_name(name: str) -> str:
    """The logged model's name for registered model `name`: `name`, with the characters MLflow
    refuses in a logged model's name (/ : . % " ') as -."""
    return "".join("-" if c in '/:.%"\'' else c for c in name)


def log_and_register(model_uri: str, config: RegisterConfig, tags: dict[str, str],
                     trained_by: str | None = None) -> tuple[str, bool]:
    """Log the HF model dir as a logged model named after the registered model (logged_model_name)
    and register it; returns (version, created). A model whose tokenizer has a chat template is
    logged with the chat task, any other with text-generation (see the module docstring for what
    each answers).

    trained_by: the MLflow run that trained the weights (the pipeline's train step). The logged
    model is that run's output and the version's source run is that run, so the registry links a
    version to its training curves and settings; None: the active run (a model registered by hand).

    Idempotent, also after a failure at any point (the tracking server gone, the pod killed):
    a version is created with its tags, the weights digest among them, in one request, so a
    rerun finds it and refreshes its tags and the candidate alias instead of adding another."""
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = config.model_name
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = storage.download_dir(model_uri, tmp)
        digest = weights_digest(model_dir)
        version_tags = mlflow_runs.model_version_tags({**tags, DIGEST_TAG: digest})
        with _server(f"registering model {name!r}", RERUN_REGISTER):
            existing = version_with_digest(name, digest)
            if existing is not None:
                return _tag_version(name, str(existing.version), version_tags), False
            model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            chat = is_chat_model(tokenizer)
            # the pipeline's default generation must fit the context, or the signature probe fails
            max_new = min(CHAT_MAX_NEW_TOKENS if chat else BASE_MAX_NEW_TOKENS, context_length(model) // 2)
            model.generation_config.max_new_tokens = max_new
            model.generation_config.max_length = None
            info = mlflow.transformers.log_model(
                transformers_model={"model": model, "tokenizer": tokenizer},
                name=logged_model_name(name),
                run_id=trained_by,  # passed on to Model.log: the logged model's source run
                task=CHAT_TASK if chat else BASE_TASK,
                pip_requirements=pip_requirements(),
                input_example={"messages": [{"role": "user", "content": "Hello"}]} if chat else "The",
                # the pyfunc's generate kwargs; without do_sample=False the transformers 5 text-generation
                # pipeline samples at temperature 0.7 (its own default), so the registered model
                # would answer differently each call
                model_config={"max_new_tokens": max_new, "do_sample": False},
            )
            created = _create_version(name, info, trained_by, version_tags)
            version = _one_version(name, digest, created)
            _set_candidate(name, version)
    return version, True


def _create_version(name: str, info: Any, run_id: str | None, tags: dict[str, str]) -> str:
    """A new version of `name` (the registered model created if missing) from the logged model
    `info`, with `run_id` as its source run (None: the logged model's own source run)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    version = client.create_model_version(name, info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id)
    return str(version.version)


def _tag_version(name: str, version: str, tags: dict[str, str]) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    _set_candidate(name, version)
    return version


def _set_candidate(name: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient().set_registered_model_alias(name, CANDIDATE, version)


def eval_cache_key(eval_digest: str, stride: int | None) -> str:
    """The model-version tag holding a version's scores on one frozen set (and window stride)."""
    return f"eval_cache.{hashlib.sha256(f'{eval_digest}:{stride}'.encode()).hexdigest()[:16]}"


def cache_scores(name: str, version: str, key: str, block: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    scores = json.dumps({"metrics": block["metrics"], "per_language": block["per_language"]}, sort_keys=True)
    if len(scores) > mlflow_runs.MODEL_VERSION_TAG_VALUE_MAX:  # a cut one would not parse: score it again instead
        print(f"[register] scores of version {version} of {name!r} not cached: {len(scores):,} characters, over "
              f"MLflow's {mlflow_runs.MODEL_VERSION_TAG_VALUE_MAX:,} for a tag value; it is scored again when compared")
        return
    with _server(f"caching scores on version {version} of {name!r}"):
        MlflowClient().set_model_version_tag(name, version, key, scores)


def champion_version(name: str) -> Any | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    with _server(f"looking up the {CHAMPION} of {name!r}"):
        try:
            return MlflowClient().get_model_version_by_alias(name, CHAMPION)
        except MlflowException as exc:
            if mlflow_runs.no_answer(exc):
                raise  # not "no champion": that would let any model through the gate
            return None  # no registered model or no champion alias yet


def promote(name: str, version: str) -> None:
    from mlflow.tracking import MlflowClient

    with _server(f"moving {CHAMPION} of {name!r} to version {version}", "rerun the promote step"):
        MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def champion_model_dir(name: str, dest: str | Path, current: Any | None = None) -> tuple[Path, str] | None:
    """Download the current champion as a plain HF model directory; None if there is none.
    current: the champion's model version, when the caller has just looked it up."""
    import mlflow

    current = current or champion_version(name)
    if current is None:
        return None
    dest = Path(dest)
    uri = f"models:/{name}@{CHAMPION}"
    with _server(f"downloading {uri}"):
        downloaded = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(dest / "mlflow")))
    try:
        out = flatten_flavor(downloaded, dest / "hf", f"{uri} (version {current.version})")
    except ModelDirError as exc:
        raise RegistryError(str(exc)) from exc
    return out, str(current.version)
