"""Benchmark: a Llama-style and a GPT-2 model of (nearly) the same parameter count, trained on the
same packed demo corpus for the same steps and seed through the real worker, on CPU.

    .venv/bin/python -m benchmarks.model_families [--steps N] [--quick] [--output PATH]

What runs, all with the settings of `pipelines/configs/demo.yaml` (what `make demo` trains):
  data     the clean step (clean_corpus) over data/demo-corpus, then the tokenizer step
           (build_tokenizer_and_pack: the BPE tokenizer, packed training sequences and the
           held-out eval split), once; both models train on these very shards
  llama    the demo's model section (RoPE, RMSNorm, SwiGLU, grouped-query attention, tied head)
  gpt2     GPT-2 with the same width, depth, heads, context and tied head (learned positions,
           LayerNorm, GELU MLP of 4 x width): within ~2 % of llama's parameter count
  train    components.train.launch.train_local: torchrun, 2 CPU ranks (gloo), ZeRO-2, fp32,
           the demo's batch, learning rate, schedule and seed, the same number of steps, so both
           see the same tokens in the same order
  measure  tokens/s: the worker's own (result.json, over all its steps); held-out bits per byte:
           the evaluate step's scoring (components.evaluate.step.load_model on the saved model,
           components.evaluate.scoring.score_documents over the eval split, the demo's batch
           size and stride); `other load`: cores that processes outside the run kept busy
           while it ran (the machine's busy time less this process's children's CPU time)

Results: benchmarks/results/model_families.json (model_families-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEMO_CONFIG = ROOT / "pipelines" / "configs" / "demo.yaml"
QUICK_STEPS = 100


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (torchrun and its ranks, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gpt2_like(llama) -> object:
    """GPT-2 with the Llama-style model's width, depth, heads, context and head tying."""
    from components.train.config import ModelConfig

    return ModelConfig(
        architecture="gpt2", n_layer=llama.num_hidden_layers, n_head=llama.num_attention_heads,
        n_embd=llama.hidden_size, n_positions=llama.max_position_embeddings,
        tie_word_embeddings=llama.tie_word_embeddings,
    )  # fmt: skip


def held_out_bits_per_byte(model_uri: str, eval_manifest_uri: str, batch_size: int, stride: int | None) -> dict:
    """The evaluate step's scoring of the saved model on the held-out split: its total metrics."""
    import torch

    from components.evaluate.scoring import score_documents
    from components.evaluate.step import load_eval_documents, load_model

    _, docs = load_eval_documents(eval_manifest_uri)
    with tempfile.TemporaryDirectory(prefix="homegrown-bench-eval-") as tmp:
        model, tokenizer = load_model(model_uri, Path(tmp), torch.device("cpu"))
    scored = score_documents(model, tokenizer, docs, batch_size=batch_size, stride=stride, device="cpu")
    return scored.total.metrics()


def table(rows: list[dict]) -> str:
    header = (f"{'model':<7} {'params':>9} {'tokens':>9} {'tokens/s':>9} {'other load':>10} {'final loss':>10} "
              f"{'held-out bpb':>12} {'eval docs':>9}")  # fmt: skip
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['name']:<7} {r['parameters']:>9,} {r['tokens']:>9,} {r['tokens_per_s']:>9,.0f} "
            f"{r['other_load_cores']:>10.2f} {r['final_loss']:>10.4f} {r['bits_per_byte']:>12.4f} {r['eval_documents']:>9}"
        )
    llama, gpt2 = (next(r for r in rows if r["name"] == name) for name in ("llama", "gpt2"))
    speed = llama["tokens_per_s"] / gpt2["tokens_per_s"]
    faster = "llama" if speed >= 1 else "gpt2"
    better = "llama" if llama["bits_per_byte"] <= gpt2["bits_per_byte"] else "gpt2"
    worse = gpt2 if better == "llama" else llama
    best = llama if better == "llama" else gpt2
    gain = (worse["bits_per_byte"] - best["bits_per_byte"]) / worse["bits_per_byte"]
    lines += [
        "",
        f"quality: {better} wins, held-out bits per byte {best['bits_per_byte']:.4f} vs {worse['bits_per_byte']:.4f} "
        f"({gain:.1%} lower) after the same {llama['tokens']:,} tokens",
        f"speed:   {faster} is faster, {max(speed, 1 / speed):.2f}x the tokens/s of the other "
        f"({llama['tokens_per_s']:,.0f} vs {gpt2['tokens_per_s']:,.0f})",
    ]
    return "\n".join(lines)


def main(steps: int | None = None, output: Path | None = None) -> dict:
    import psutil

    from benchmarks.train_loop import busy_seconds, machine, save_report
    from components.clean.clean import clean_corpus
    from components.manifest import Manifest
    from components.train.launch import train_local
    from components.train.model import build_model, parameter_count
    from components.tokenizer.step import build_tokenizer_and_pack
    from pipelines.config import load_config

    started = time.perf_counter()
    run = load_config(DEMO_CONFIG)
    train = run.train.model_copy(update={"max_steps": steps or run.train.max_steps, "system_metrics": False})
    models = {"llama": run.model, "gpt2": gpt2_like(run.model)}
    output = output or RESULTS / "model_families.json"
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="homegrown-bench-families-") as tmp:
        work = Path(tmp)
        cleaned = clean_corpus(str(ROOT / run.corpus), str(work / "clean"), run.clean)
        packed = build_tokenizer_and_pack(cleaned.manifest_uri, str(work / "tok"), run.tokenizer)
        facts = Manifest.load(packed.manifest_uri).facts
        vocab = int(facts["vocab_size"])
        print(f"[bench] data: {facts['train_sequences']:,} packed sequences of {facts['seq_len']} "
              f"({facts['train_tokens']:,} tokens), {facts['eval_documents']} held-out documents, vocab {vocab:,} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
        for name, model in models.items():
            params = parameter_count(build_model(model, vocab, train.seed, facts.get("eos_token_id")))
            print(f"[bench] {name}: {params:,} parameters, {train.max_steps} steps x {train.global_batch_size} x "
                  f"{facts['seq_len']} tokens, ZeRO-{train.zero_stage}, {train.nproc_per_node} CPU ranks", flush=True)  # fmt: skip
            busy, cpu, wall = busy_seconds(), children_cpu_s(), time.perf_counter()
            result = train_local(packed.manifest_uri, str(work / f"out-{name}"), train, model)
            wall = time.perf_counter() - wall
            other = max(0.0, busy_seconds() - busy - (children_cpu_s() - cpu)) / wall
            scored = held_out_bits_per_byte(result.model_uri, facts["eval_manifest_uri"], run.evaluate.batch_size,
                                            run.evaluate.stride)  # fmt: skip
            rows.append({
                "name": name, "model": model.model_dump(exclude_none=True), "parameters": params,
                "steps": result.steps, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
                "flops_per_token": result.flops_per_token, "final_loss": result.final_loss,
                "bits_per_byte": scored["bits_per_byte"], "eval_metrics": scored,
                "eval_documents": int(scored.get("documents", facts["eval_documents"])), "run_s": round(wall, 1),
                "other_load_cores": round(other, 2),
            })  # fmt: skip
            print(f"[bench] {name}: {result.tokens_per_s:,.0f} tokens/s, final loss {result.final_loss:.4f}, held-out "
                  f"{scored['bits_per_byte']:.4f} bits/byte, run {wall:.0f} s, other load {other:.2f} cores", flush=True)  # fmt: skip

    text = table(rows)
    print(text, flush=True)
    report = {
        "benchmark": "model_families",
        "machine": {**machine(), "load_average": os.getloadavg(), "cpu_count_logical": psutil.cpu_count()},
        "config": str(DEMO_CONFIG.relative_to(ROOT)),
        "train": train.model_dump(),
        "tokenizer": run.tokenizer.model_dump(),
        "rows": rows,
        "duration_s": round(time.perf_counter() - started, 1),
        "table": text,
    }
    return save_report(report, output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_families", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per model (default: the demo's)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps, to model_families-quick.json")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/model_families.json")
    args = parser.parse_args()
    if args.quick:
        main(steps=args.steps or QUICK_STEPS, output=args.output or RESULTS / "model_families-quick.json")
    else:
        main(steps=args.steps, output=args.output)
    sys.exit(0)
