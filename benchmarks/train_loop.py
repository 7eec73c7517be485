"""Benchmark: our training loop against a bare `deepspeed.initialize` loop, and the cost of
MLflow logging, on CPU (2 ranks, gloo, one thread each).

    .venv/bin/python -m benchmarks.train_loop [--rounds 2] [--steps 40] [--quick] [--output PATH]

Three variants, each a fresh `torchrun --standalone --nproc_per_node=2` run, alternated round by
round (ours, bare, ours+mlflow, ours, bare, ...) so drift hits all of them:
  ours               components.train.worker, log_every=1 (a line per step), no MLflow
  bare               benchmarks._bare_loop: the same model, data order, DeepSpeed config, AdamW,
                     ZeRO stage and steps, and nothing else in the loop
  ours+mlflow        the worker with MLFLOW_RUN_ID set (a run in a fresh SQLite store) and
                     log_every=1: four metrics logged every step (its MetricsShipper sends them in one
                     log_batch call per flush interval)

How it is timed: the parent stamps each rank-0 step line as it arrives, and at each stamp reads
the CPU time of both ranks (all their threads), of rank 0's threads other than its main one
(MLflow's logging threads run there) and of the whole machine. Steps 1..WARMUP are left out, so
setup (imports, engine init) and the end (checkpoint, consolidation) fall outside; everything
between two steps (logging, MLflow, the SIGTERM check) falls inside. The rest is cut into
windows of WINDOW steps (~1 s); a window is quiet when other processes kept fewer than
QUIET_WINDOW_LOAD cores busy during it.

Why quiet windows: this 2-core machine may be shared with other sessions, and the two ranks
run in lock step (a gloo all-reduce per micro batch), so other work on either core stretches
every step: 0.2 cores of it cost ~20 %. A variant's step time is the total time of its quiet
windows over all its runs / their steps; the whole-run figure (median over runs) is kept beside
it. Before each run the benchmark waits (up to QUIET_WAIT_S) for the machine to go quiet, and
runs a variant again (once) when fewer than half its windows were quiet.

Identical runs differ by up to ~5 % even on a quiet machine: more than the 1 % MLflow goal and
as much as the 5 % loop goal. So both are also accounted from parts measured precisely:
  loop     what the worker does per step beyond the bare loop, timed alone by the bare run
           after its loop (benchmarks._bare_loop.extras), over bare's step time
  MLflow   MetricsShipper.metrics on the main thread (timed in this process against SQLite, see
           tracker_cost) plus the extra CPU of rank 0's other threads in the runs, over ours'
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
EXTRAS_LINE = re.compile(r"^\[bare\] worker extras ([\d.]+) ms/step")
STEP_LINE = re.compile(r"^\[(?:train|bare)\] step (\d+)/(\d+) .*ms/step")

# Big enough that a step takes ~200 ms with one core per rank, so timer and scheduler noise is
# a small fraction of it; 2 micro batches per update per rank, as in the default config.
VOCAB = 2048
SEQ_LEN = 128
SEQUENCES = 2048
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": SEQ_LEN}
TRAIN = {
    "zero_stage": 2, "nproc_per_node": 2, "micro_batch_size": 4, "global_batch_size": 16,
    "learning_rate": 1e-3, "warmup_steps": 5, "log_every": 1, "seed": 1234,
    "checkpoint_every": 0, "keep_checkpoints": 1, "resume": False,
}  # fmt: skip
WARMUP = 5  # steps left out at the start
WINDOW = 5  # steps per window
RATIO_GOAL = 1.05
MLFLOW_GOAL = 0.01
VARIANTS = ("ours", "bare", "ours+mlflow")
QUIET_WINDOW_LOAD = 0.05  # cores of other work a quiet window may see (the parent's own reads included)
QUIET_LOAD = 0.1  # before a run, wait until the machine is this quiet ...
QUIET_WAIT_S = 30  # ... but no longer than this
PATIENCE_S = 120  # no more waiting or re-running once the benchmark has run this long


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (guest time is inside user)."""
    t = psutil.cpu_times()._asdict()
    return sum(v for k, v in t.items() if k not in ("idle", "iowait", "guest", "guest_nice"))


def busy_cores(seconds: float = 1.0) -> float:
    """Cores the machine kept busy over `seconds` (this process sleeps meanwhile)."""
    before = busy_seconds()
    time.sleep(seconds)
    return (busy_seconds() - before) / seconds


def wait_for_quiet() -> float:
    """Seconds waited for the machine to go quiet (gives up after QUIET_WAIT_S)."""
    started = time.perf_counter()
    while time.perf_counter() - started < QUIET_WAIT_S and busy_cores() > QUIET_LOAD:
        pass
    return round(time.perf_counter() - started, 1)


def build_dataset(root: Path) -> str:
    """Random packed tokens in two shards, plus the manifest the worker reads."""
    from components.manifest import Manifest, shard_info

    data = np.random.default_rng(0).integers(0, VOCAB, size=(SEQUENCES, SEQ_LEN), dtype=np.int32)
    infos = []
    for i, part in enumerate(np.array_split(data, 2)):
        uri = str(root / "train" / f"part-{i:05d}.npy")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        np.save(uri, part, allow_pickle=False)
        infos.append(shard_info(uri, records=len(part)))
    manifest_uri = str(root / "manifest.json")
    facts = {"seq_len": SEQ_LEN, "vocab_size": VOCAB, "eos_token_id": 0}
    Manifest(kind="packed-tokens", root=str(root), shards=infos, facts=facts).save(manifest_uri)
    return manifest_uri


def new_mlflow_run(tracking_uri: str) -> str:
    from mlflow.tracking import MlflowClient

    from components.mlflow_runs import ensure_experiment

    return MlflowClient(tracking_uri).create_run(ensure_experiment(tracking_uri, "bench-train-loop")).info.run_id


def run_variant(variant: str, manifest_uri: str, config_path: Path, work: Path, index: int) -> dict:
    """One torchrun run of `variant`; returns its whole-run figures and its windows."""
    from components.train.launch import worker_env

    env = worker_env({"HF_HUB_OFFLINE": "1"})
    for key in ("MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = work / f"out-{index}"
    if variant == "bare":
        command = [*torchrun, "-m", "benchmarks._bare_loop", "--data", manifest_uri, "--config", str(config_path)]
    else:
        command = [*torchrun, "-m", "components.train.worker", "--data", manifest_uri, "--output", str(out),
                   "--config", str(config_path)]  # fmt: skip
    if variant == "ours+mlflow":
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / f'mlflow-{index}' / 'mlflow.db'}"
        env["MLFLOW_RUN_ID"] = new_mlflow_run(env["MLFLOW_TRACKING_URI"])

    stamp: dict[int, float] = {}  # step -> wall clock when its line arrived
    ranks_cpu: dict[int, float] = {}  # step -> CPU seconds of both ranks by then
    busy: dict[int, float] = {}  # step -> busy CPU seconds of the whole machine by then
    side_cpu: dict[int, float] = {}  # step -> CPU seconds of rank 0's threads other than its main thread
    extras_ms = None
    log: list[str] = []
    ranks: list[psutil.Process] = []
    rank0: psutil.Process | None = None
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        now = time.perf_counter()
        log.append(line)
        if m := EXTRAS_LINE.match(line):
            extras_ms = float(m.group(1))
        if m := STEP_LINE.match(line):
            step = int(m.group(1))
            stamp[step] = now
            if not ranks:
                ranks = psutil.Process(process.pid).children(recursive=True)
                rank0 = next((p for p in ranks if p.environ().get("RANK") == "0"), None)
            ranks_cpu[step] = sum(sum(p.cpu_times()[:2]) for p in ranks)
            busy[step] = busy_seconds()
            if rank0 is not None:
                side_cpu[step] = sum(t.user_time + t.system_time for t in rank0.threads() if t.id != rank0.pid)
    if process.wait() != 0:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / f"train_loop-failed-{variant}.log").write_text("".join(log))
        errors = [x for x in log if "Error" in x and "ChildFailedError" not in x]
        raise SystemExit(f"{variant} run failed ({process.returncode}):\n" + "".join(errors[:10] + log[-40:]))
    run_s = time.perf_counter() - started

    steps = max(stamp)
    if sorted(stamp) != list(range(1, steps + 1)) or steps < WARMUP + WINDOW:
        raise SystemExit(f"{variant}: expected a line for each of >= {WARMUP + WINDOW} steps, got {sorted(stamp)}")
    windows = []
    for first in range(WARMUP, steps - WINDOW + 1, WINDOW):
        last = first + WINDOW
        wall = stamp[last] - stamp[first]
        cpu = ranks_cpu[last] - ranks_cpu[first]
        windows.append({
            "steps": WINDOW,
            "wall_s": wall,
            "cpu_s": cpu,
            "side_cpu_s": side_cpu[last] - side_cpu[first] if side_cpu else None,
            "other_load_cores": round(max(0.0, busy[last] - busy[first] - cpu) / wall, 3),
        })  # fmt: skip
    n = steps - WARMUP
    wall_s, cpu_s = stamp[steps] - stamp[WARMUP], ranks_cpu[steps] - ranks_cpu[WARMUP]
    row = {
        "variant": variant,
        "steps": steps,
        "step_ms": wall_s * 1000 / n,
        "cpu_ms": cpu_s * 1000 / n / 2,  # per rank
        "other_load_cores": max(0.0, busy[steps] - busy[WARMUP] - cpu_s) / wall_s,
        "side_cpu_ms": (side_cpu[steps] - side_cpu[WARMUP]) * 1000 / n if side_cpu else None,
        "quiet_windows": sum(w["other_load_cores"] < QUIET_WINDOW_LOAD for w in windows),
        "windows": windows,
        "run_s": run_s,
    }
    if variant == "bare":
        row["worker_extras_ms"] = extras_ms
    else:
        row["worker_steps_per_s"] = json.loads((out / "result.json").read_text())["steps_per_s"]
    if variant == "ours+mlflow":
        from mlflow.tracking import MlflowClient

        history = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_metric_history(env["MLFLOW_RUN_ID"], "train/loss")
        row["mlflow_loss_points"] = len(history)
        if len(history) != steps:
            raise SystemExit(f"{variant}: {len(history)} train/loss points logged, expected {steps}")
    return row


def tracker_cost(calls: int = 30, interval_s: float = 0.2) -> dict:
    """CPU of one `MetricsShipper.metrics` call, timed in this process against a fresh SQLite store, one
    call per `interval_s` (a step) with the metrics the worker logs on CPU. Main thread:
    time.thread_time around each call; other threads: their CPU over the calls (10 ms ticks), a
    cross-check of the side CPU measured in the runs."""
    from components.train.metrics_shipper import MetricsShipper

    me = psutil.Process()

    def side_cpu() -> float:
        return sum(t.user_time + t.system_time for t in me.threads() if t.id != me.pid)

    metrics = {"train/loss": 5.0, "train/lr": 1e-3, "train/tokens_per_s": 10_000.0, "train/grad_norm": 1.0}
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    with tempfile.TemporaryDirectory(prefix="homegrown-bench-tracker-") as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=new_mlflow_run(uri))
        tracker = MetricsShipper(enabled=True)
        main_s, side_before = 0.0, side_cpu()
        for step in range(1, calls + 1):
            started, cpu_started = time.perf_counter(), time.thread_time()
            tracker.metrics({**metrics, "train/loss": 5.0 - step / 100}, step=step)
            main_s += time.thread_time() - cpu_started
            time.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
        side_s = side_cpu() - side_before
        tracker.close(True)
        costs = {"main_ms_per_call": main_s * 1000 / calls, "side_ms_per_call": side_s * 1000 / calls}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return costs


def save_report(report: dict, output: Path) -> dict:
    """Write a benchmark's report (with `duration_s`) as JSON to `output`, say where; returns it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"[bench] {report['duration_s']:.0f} s; results -> {output}", flush=True)
    return report


def machine() -> dict:
    import deepspeed
    import mlflow
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": "none (DS_ACCELERATOR=cpu)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
        "mlflow": mlflow.__version__,
    }


def summarise(rows: list[dict], tracker_cost: dict | None = None) -> dict:
    summary: dict = {}
    for variant in VARIANTS:
        runs = [r for r in rows if r["variant"] == variant]
        windows = [w for r in runs for w in r["windows"]]
        quiet = [w for w in windows if w["other_load_cores"] < QUIET_WINDOW_LOAD]
        steps = sum(w["steps"] for w in quiet)
        every = sum(w["steps"] for w in windows)
        side = [w["side_cpu_s"] for w in windows if w["side_cpu_s"] is not None]
        summary[variant] = {
            # quiet windows of all runs pooled: the headline figures
            "step_ms": sum(w["wall_s"] for w in quiet) * 1000 / steps if steps else None,
            "cpu_ms": sum(w["cpu_s"] for w in quiet) * 1000 / steps / 2 if steps else None,
            # CPU of rank 0's non-main threads (MLflow's logging threads among them), all windows
            "side_cpu_ms": sum(side) * 1000 / every if len(side) == len(windows) else None,
            "quiet_windows": len(quiet),
            "windows": len(windows),
            # every window of every run, median over runs: what a shared machine gave
            "all_step_ms": statistics.median(r["step_ms"] for r in runs),
            "all_cpu_ms": statistics.median(r["cpu_ms"] for r in runs),
            "all_other_load_cores": statistics.median(r["other_load_cores"] for r in runs),
            "runs_step_ms": [round(r["step_ms"], 1) for r in runs],
        }

    def change(a: str, b: str, key: str) -> float | None:
        x, y = summary[a][key], summary[b][key]
        return x / y if x and y else None

    summary["ours_over_bare"] = change("ours", "bare", "step_ms")
    summary["ours_over_bare_cpu"] = change("ours", "bare", "cpu_ms")
    summary["ours_over_bare_all"] = change("ours", "bare", "all_step_ms")
    # accounted: what the worker adds per step, timed alone in the bare runs, over bare's step
    extras = [r["worker_extras_ms"] for r in rows if r["variant"] == "bare" and r.get("worker_extras_ms") is not None]
    summary["worker_extras_ms"] = statistics.median(extras) if extras else None
    bare_ms = summary["bare"]["step_ms"] or summary["bare"]["all_step_ms"]
    summary["ours_over_bare_accounted"] = 1 + summary["worker_extras_ms"] / bare_ms if extras else None
    for suffix, field in (("", "step_ms"), ("_cpu", "cpu_ms"), ("_all", "all_step_ms")):
        ratio = change("ours+mlflow", "ours", field)
        summary["mlflow_cost" + suffix] = ratio - 1 if ratio else None
    if tracker_cost:
        # accounted from the parts: the logging call on the main thread (timed in-process) plus
        # the extra CPU of rank 0's other threads in the runs, all of it charged to the step
        side, base = summary["ours+mlflow"]["side_cpu_ms"], summary["ours"]["side_cpu_ms"]
        step = summary["ours"]["step_ms"] or summary["ours"]["all_step_ms"]
        call = tracker_cost["main_ms_per_call"]
        summary["mlflow_cost_accounted"] = (call + side - base) / step if side is not None and base is not None else None
        summary["ours+mlflow"]["call_ms"] = call
    return summary


def table(summary: dict) -> str:
    def f(value: float | None, spec: str, scale: float = 1.0) -> str:
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return format("n/a", f">{width}") if value is None else format(value * scale, spec)

    header = (
        f"{'variant':<17} {'ms/step':>8} {'CPU ms':>7} {'side CPU':>8} {'quiet':>6}   "
        f"{'all: ms/step':>12} {'other load':>10}  ms/step per run"
    )
    lines = [header, "-" * len(header)]
    for variant in VARIANTS:
        s = summary[variant]
        quiet = f"{s['quiet_windows']}/{s['windows']}"
        runs = " ".join(f"{x:.1f}" for x in s["runs_step_ms"])
        lines.append(
            f"{variant:<17} {f(s['step_ms'], '8.1f')} {f(s['cpu_ms'], '7.1f')} {f(s['side_cpu_ms'], '8.2f')} "
            f"{quiet:>6}   {s['all_step_ms']:>12.1f} {s['all_other_load_cores']:>10.2f}  {runs}"
        )
    ratio = summary["ours_over_bare"]
    verdict = "n/a" if ratio is None else "ok" if ratio <= RATIO_GOAL else "MISSED"
    cpu, every = f(summary["ours_over_bare_cpu"], ".3f"), f(summary["ours_over_bare_all"], ".3f")
    accounted = f(summary["ours_over_bare_accounted"], ".3f")
    extras = f(summary["worker_extras_ms"], ".2f")
    ab = f"ours / bare: {f(ratio, '.3f')}  (CPU {cpu}, all windows {every}; "
    lines += ["", ab + f"accounted {accounted}: worker extras {extras} ms/step)  goal <= {RATIO_GOAL}: {verdict}"]
    accounted = summary.get("mlflow_cost_accounted")
    verdict = "n/a" if accounted is None else "ok" if accounted < MLFLOW_GOAL else "MISSED"
    lines.append(
        f"MLflow cost, {'ours+mlflow':<17}: accounted {f(accounted, '+.2f', 100)} % (call "
        f"{f(summary['ours+mlflow'].get('call_ms'), '.2f')} ms + side CPU); run vs run "
        f"{f(summary['mlflow_cost'], '+.1f', 100)} % (all windows {f(summary['mlflow_cost_all'], '+.1f', 100)} %)  "
        f"goal < {MLFLOW_GOAL * 100:.0f} %: {verdict}"
    )
    lines += [
        f"ms/step, CPU ms (per rank): pooled quiet windows ({WINDOW} steps, other load < {QUIET_WINDOW_LOAD} cores);",
        "side CPU: ms/step of rank 0's threads but the main one; accounted = (MetricsShipper.metrics main-thread ms per",
        "call, timed in-process, + side CPU - ours' side CPU) / ours' ms/step",
    ]
    return "\n".join(lines)


def main(rounds: int = 2, steps: int = 40, output: Path | None = None, patience_s: float = PATIENCE_S) -> dict:
    from components.train.config import ModelConfig, TrainConfig
    from components.train.model import build_model, parameter_count
    from components.train.run_config import write_worker_config

    output = output or RESULTS / "train_loop.json"
    train = TrainConfig(max_steps=steps, **TRAIN)
    model_cfg = ModelConfig(**MODEL)
    params = parameter_count(build_model(model_cfg, VOCAB, 0))
    print(f"[bench] train loop: {params:,} params, {train.global_batch_size} x {SEQ_LEN} tokens/step "
          f"(micro {train.micro_batch_size} x 2 accumulation x 2 ranks), ZeRO-{train.zero_stage}, {steps} steps "
          f"(first {WARMUP} left out), {rounds} rounds of {', '.join(VARIANTS)}", flush=True)  # fmt: skip
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="homegrown-bench-train-") as tmp:
        work = Path(tmp)
        manifest_uri = build_dataset(work / "tok")
        config_path = work / "train.json"
        write_worker_config(str(config_path), train, model_cfg)
        for r in range(rounds):
            for variant in VARIANTS:
                for attempt in range(2):
                    patient = time.perf_counter() - started < patience_s
                    waited = wait_for_quiet() if patient else 0.0
                    row = run_variant(variant, manifest_uri, config_path, work, len(rows))
                    row.update(round=r + 1, waited_for_quiet_s=waited)
                    rows.append(row)
                    again = patient and attempt == 0 and row["quiet_windows"] * 2 < len(row["windows"])
                    print(f"[bench] round {r + 1} {variant:<16} {row['step_ms']:6.1f} ms/step, CPU {row['cpu_ms']:.1f} "
                          f"ms/rank, other load {row['other_load_cores']:.2f} cores, quiet windows "
                          f"{row['quiet_windows']}/{len(row['windows'])}, run {row['run_s']:.0f} s"
                          f"{', again' if again else ''}", flush=True)  # fmt: skip
                    if not again:
                        break

    print("[bench] timing MetricsShipper.metrics in-process", flush=True)
    costs = tracker_cost()
    summary = summarise(rows, costs)
    text = table(summary)
    print(text, flush=True)
    setup = {
        "model": MODEL, "vocab_size": VOCAB, "parameters": params, "seq_len": SEQ_LEN, "sequences": SEQUENCES,
        "train": train.model_dump(), "world_size": 2, "backend": "gloo", "OMP_NUM_THREADS": 1,
        "warmup_steps_left_out": WARMUP, "window_steps": WINDOW, "quiet_window_load": QUIET_WINDOW_LOAD,
        "rounds": rounds,
    }  # fmt: skip
    report = {
        "benchmark": "train_loop",
        "machine": machine(),
        "setup": setup,
        "goals": {"ours_over_bare_max": RATIO_GOAL, "mlflow_cost_max": MLFLOW_GOAL},
        "summary": summary,
        "tracker_cost": costs,
        "rows": rows,
        "duration_s": round(time.perf_counter() - started, 1),
        "table": text,
    }
    return save_report(report, output)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_loop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternated")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run")
    parser.add_argument("--quick", action="store_true", help="1 round of 20 steps, to train_loop-quick.json")
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/train_loop.json")
    args = parser.parse_args()
    if args.quick:
        main(rounds=1, steps=20, output=args.output or RESULTS / "train_loop-quick.json", patience_s=30)
    else:
        main(rounds=args.rounds, steps=args.steps, output=args.output)
