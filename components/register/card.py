"""The model card: a Markdown page logged with every registered version (and set as the
version's description, so the MLflow UI shows it): data, languages, training, evaluation,
gate, lineage and limits, from what the pipeline measured.

Lineage keys the card knows: digest.data, digest.tokenizer, digest.packed (the names of 0.1,
data_manifest_digest, tokenizer_digest, packed_data_digest, too), cleaning_stats (a JSON text,
summarised under Data, not listed), run.<step> and run.pipeline (MLflow run ids, listed as links to
the runs' pages when the experiment id is given), the rest listed as they are."""

from __future__ import annotations

import json
from typing import Any


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    if isinstance(value, dict):  # counts by reason
        value = sum(value.values())
    return "–" if value is None or value != value else fmt.format(value)


def _lineage_line(key: str, value: str, experiment_id: str | None) -> str:
    """`- key: `value``; an MLflow run id (run.<step>, run.pipeline) as a link to its page in the
    model-training view, relative (#/experiments/...), as the UI shows a version's description."""
    if key.startswith("run.") and experiment_id:
        from components.mlflow_runs import run_link

        return f"- {key}: [{value}]({run_link(experiment_id, value)})"
    return f"- {key}: `{value}`"


def model_card(
    name: str,
    version: str,
    results: dict[str, Any],
    gate_markdown: str,
    lineage: dict[str, str],
    train: dict[str, Any] | None = None,
    base_model: str | None = None,
    lora: bool = False,
    experiment_id: str | None = None,
) -> str:
    stats = json.loads(lineage.get("cleaning_stats") or "{}")
    data_digest = lineage.get("digest.data") or lineage.get("data_manifest_digest") or "?"
    tokenizer_digest = lineage.get("digest.tokenizer") or lineage.get("tokenizer_digest") or "?"
    packed_digest = lineage.get("digest.packed") or lineage.get("packed_data_digest") or "?"
    metrics = results["metrics"]
    per_language = results.get("per_language") or {}
    chat = results.get("kind") == "chat"  # instruction-tuned: scored on held-out conversations
    unit = "conversations" if chat else "documents"
    what = "A chat model instruction-tuned" if chat else "A causal language model trained"
    from_base = "tuned from" if chat else "continued from"
    lines = [
        f"# {name}, version {version}",
        "",
        f"{what} by the homegrown pipeline (run `{lineage.get('pipeline_run_name', '?')}`)"
        + (f", {from_base} `{base_model}`" + (" with LoRA adapters (merged)" if lora else "") if base_model else "")
        + ".",
        "",
        "## Data",
        "",
        f"- {'cleaned conversations' if chat else 'cleaned corpus'}: manifest digest "
        f"`{data_digest[:16]}`; {_num(stats.get('records_in'))} {unit} in, "
        f"{_num(stats.get('kept'))} kept, {_num(stats.get('dropped'))} dropped, {_num(stats.get('quarantined'))} "
        "quarantined",
        f"- tokenizer digest `{tokenizer_digest[:16]}`; packed data digest "
        f"`{packed_digest[:16]}`",
        f"- evaluation set: digest `{results.get('eval_digest', '?')[:16]}`, {_num(metrics.get('documents'))} held-out "
        f"{unit}, {len(per_language)} languages",
        "",
    ]
    if train:
        lines += [
            "## Training",
            "",
            f"- {_num(train.get('parameters'))} parameters, {_num(train.get('steps'))} steps, "
            f"{_num(train.get('tokens'))} tokens, final loss {_num(train.get('final_loss'), '{:.4f}')}",
            f"- DeepSpeed ZeRO-{train.get('zero_stage')}, {train.get('precision')}, {train.get('world_size')} ranks "
            f"on {train.get('device') or '?'}, {_num(train.get('tokens_per_s'))} tokens/s"
            + (f", MFU {train['mfu']:.1%}" if train.get("mfu") else ""),
            "",
        ]
    lines += [
        "## Evaluation",
        "",
        f"Bits per byte {_num(metrics.get('bits_per_byte'), '{:.4f}')}, perplexity "
        f"{_num(metrics.get('perplexity'), '{:.2f}')} "
        + ("(the assistant's tokens of each held-out conversation, end of turn included, per byte of its replies)."
           if chat else "(rolling windows, as lm-eval's loglikelihood_rolling)."),
        "",
    ]
    if per_language:
        lines += [f"| language | {unit} | bits per byte | tokens/char |", "|---|---:|---:|---:|"]
        for lang, m in per_language.items():
            lines.append(f"| {lang} | {_num(m.get('documents'))} | {_num(m.get('bits_per_byte'), '{:.4f}')} | "
                         f"{_num(m.get('tokens_per_char'), '{:.3f}')} |")  # fmt: skip
        lines.append("")
    lines += ["## Promotion gate", "", gate_markdown.strip(), "", "## Lineage", ""]
    lines += [_lineage_line(key, value, experiment_id) for key, value in sorted(lineage.items())
              if key != "cleaning_stats"]
    few = [lang for lang, m in per_language.items() if (m.get("documents") or 0) < 20]
    lines += [
        "",
        "## Limits",
        "",
        f"- Trained and measured only on the {'conversations' if chat else 'corpus'} above; figures on other text "
        "will differ.",
        "- Instruction-tuned on those conversations only: no preference or safety tuning, no toxicity filtering "
        "beyond the cleaning step's rules." if chat else
        "- No instruction tuning, safety tuning or toxicity filtering beyond the cleaning step's rules.",
    ]
    if few:
        lines.append(f"- Fewer than 20 evaluation {unit} for: {', '.join(few)}; their figures are noisy.")
    return "\n".join(lines) + "\n"
