"""The evaluate step: score a model (and optionally the champion) on the frozen eval set.

Output layout under `output_uri`:

    results.json   metrics, eval_digest, per_language, champion block (if any), samples
    samples.json   the generated samples alone
    report.md      the Markdown report
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from components import shards as shard_io
from components import storage
from components.evaluate.config import EvaluateConfig
from components.evaluate.report import render_report
from components.evaluate.samples import generate_samples
from components.evaluate.scoring import ScoreResult, score_documents
from components.manifest import Manifest, file_digest


@dataclass
class EvalResult:
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    report_markdown: str
    results_uri: str


def _device(config: EvaluateConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("evaluate.device=cuda but no CUDA device is visible; use 'auto' or 'cpu'")
    return torch.device(config.device)


def load_model(model_uri: str, local_dir: Path, device: torch.device):
    """A Hugging Face model directory (safetensors weights, tokenizer beside it), local or s3://."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.hf_model import ModelDirError, fetch_model_dir

    path = fetch_model_dir(model_uri, local_dir)
    if not any((Path(path) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise ModelDirError(f"{model_uri}: no tokenizer beside the weights (tokenizer.json); save it with the model")
    model = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    return model.to(device).eval(), tokenizer


# the fact components/tokenizer/step.py writes on the documents it held out of tokenizer and model training
EVAL_ROLE = "held-out-eval"


def load_eval_documents(eval_manifest_uri: str) -> tuple[Manifest, list[shard_io.Document]]:
    """The held-out documents, after checking each shard still matches its recorded digest.

    Raises ValueError naming the file when it is not the held-out evaluation set (a 'documents'
    manifest with facts.role == EVAL_ROLE, as the tokenizer step writes to eval/manifest.json):
    any other documents (the cleaned corpus) include training data and would score as if unseen."""
    manifest = Manifest.load(eval_manifest_uri)
    if manifest.kind != "documents" or manifest.facts.get("role") != EVAL_ROLE:
        found = f"kind={manifest.kind!r}, facts.role={manifest.facts.get('role')!r}"
        raise ValueError(
            f"{eval_manifest_uri}: not the held-out evaluation set ({found}; expected kind='documents', "
            f"facts.role={EVAL_ROLE!r}): other documents include training data. Pass the tokenizer step's "
            "manifest.json (`homegrown tokenize --output DIR` writes DIR/manifest.json) or its held-out set, "
            "DIR/eval/manifest.json"
        )
    for shard in manifest.shards:
        sha, _ = file_digest(shard.uri)
        if sha != shard.sha256:
            raise ValueError(f"{shard.uri}: content changed since {eval_manifest_uri} was written (sha256 mismatch)")
    docs = list(shard_io.iter_texts([s.uri for s in manifest.shards]))
    if not docs:
        raise ValueError(f"{eval_manifest_uri}: the evaluation set is empty; hold out documents in the tokenizer step")
    return manifest, docs


def _score_model(model_uri: str, docs, config: EvaluateConfig, device: torch.device, samples: bool):
    with tempfile.TemporaryDirectory(prefix="homegrown-eval-model-") as tmp:
        model, tokenizer = load_model(model_uri, Path(tmp), device)
    started = time.perf_counter()
    scored = score_documents(
        model, tokenizer, docs, batch_size=config.batch_size, stride=config.stride, device=device
    )
    seconds = time.perf_counter() - started
    generated = (
        generate_samples(
            model,
            tokenizer,
            config.prompts,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            seed=config.seed,
            device=device,
        )
        if samples
        else []
    )
    return scored, seconds, generated


def _block(model_uri: str, scored: ScoreResult) -> dict[str, Any]:
    return {
        "model_uri": model_uri,
        "metrics": scored.total.metrics(),
        "per_language": {lang: t.metrics() for lang, t in scored.per_language.items()},
        "per_source": {source: t.metrics() for source, t in scored.per_source.items()},
    }


def _json_safe(value: Any) -> Any:
    """NaN (a figure that does not apply) as null: strict JSON readers reject NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def evaluate_model(
    model_uri: str,
    eval_manifest_uri: str,
    output_uri: str,
    config: EvaluateConfig,
    champion_uri: str | None = None,
    champion_label: str | None = None,
    champion_scores: dict[str, Any] | None = None,
    champion_version: str | None = None,
) -> EvalResult:
    """Score the model (and the champion at `champion_uri`, named `champion_label` in results).

    champion_scores: the champion's {"metrics", "per_language"} on this same set, from an
    earlier run (see registry.eval_cache_key); then it is not scored again.
    champion_version: the registry version the champion is, recorded in the champion block as
    "version" (None for a model directory from outside the registry): the register step's gate
    compares only against scores of the registry's current champion."""
    device = _device(config)
    eval_manifest, docs = load_eval_documents(eval_manifest_uri)

    scored, seconds, samples = _score_model(model_uri, docs, config, device, samples=True)
    results: dict[str, Any] = {
        **_block(model_uri, scored),
        "eval_manifest_uri": eval_manifest_uri,
        "eval_digest": eval_manifest.digest,
        "config": config.model_dump(mode="json"),
        "samples": samples,
    }
    metrics = flat_metrics(results)
    metrics["eval_seconds"] = seconds
    metrics["eval_tokens_per_s"] = scored.total.tokens / seconds if seconds > 0 else 0.0

    if champion_scores is not None and config.compare_champion:
        results["champion"] = {"model_uri": champion_label or champion_uri or "champion", "cached": True,
                               "metrics": champion_scores["metrics"], "per_language": champion_scores["per_language"]}
    elif champion_uri and config.compare_champion:
        try:
            champ_scored, _, _ = _score_model(champion_uri, docs, config, device, samples=False)
        except Exception as exc:  # the gate must not decide without the champion's figures
            raise RuntimeError(
                f"the champion {champion_label or champion_uri} cannot be evaluated: {exc}; fix it or move the "
                "champion alias to a loadable version (or set evaluate.compare_champion: false)"
            ) from exc
        results["champion"] = _block(champion_label or champion_uri, champ_scored)
    return write_results(output_uri, results, metrics, champion_version, render_report)


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """results' metrics with bits per byte (and tokens per character) per language and per source
    as flat keys; NaN figures (e.g. tokens per word without words) left out."""
    metrics = dict(results["metrics"])
    for lang, m in results["per_language"].items():
        metrics[f"bits_per_byte_{lang}"] = m["bits_per_byte"]
        metrics[f"tokens_per_char_{lang}"] = m["tokens_per_char"]
    for source, m in results["per_source"].items():
        metrics[f"bits_per_byte_source_{source}"] = m["bits_per_byte"]
    return {k: v for k, v in metrics.items() if v == v}


def write_results(output_uri: str, results: dict[str, Any], metrics: dict[str, float], champion_version: str | None,
                  render: Callable[[dict[str, Any]], str]) -> EvalResult:
    """Complete results (the champion block's version, the champion's figures and the delta among
    the metrics, metrics_flat), then write samples.json, report.md (`render`) and results.json
    under output_uri, results.json last."""
    champion_metrics = None
    if "champion" in results:
        results["champion"]["version"] = champion_version
        champion_metrics = dict(results["champion"]["metrics"])
        metrics["champion_bits_per_byte"] = champion_metrics["bits_per_byte"]
        metrics["bits_per_byte_delta"] = metrics["bits_per_byte"] - champion_metrics["bits_per_byte"]
    results["metrics_flat"] = metrics

    report = render(results)
    results_uri = storage.join(output_uri, "results.json")
    storage.write_text(storage.join(output_uri, "samples.json"),
                       json.dumps(results["samples"], indent=2, ensure_ascii=False) + "\n")  # fmt: skip
    storage.write_text(storage.join(output_uri, "report.md"), report)
    storage.write_text(results_uri, json.dumps(_json_safe(results), indent=2, ensure_ascii=False) + "\n")
    return EvalResult(
        metrics={k: float(v) for k, v in metrics.items()},
        champion_metrics=champion_metrics,
        report_markdown=report,
        results_uri=results_uri,
    )
