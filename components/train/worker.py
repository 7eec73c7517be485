"""The training recipe: one process per rank, launched by torchrun (or any launcher that sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT).

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 \
        -m components.train.worker --data TOK/manifest.json --output OUT --config train.json

`train.json` holds {"train": TrainConfig, "model": ModelConfig}. Read top to bottom: setup,
data order, loop, checkpoint, consolidation, result. Rank 0 alone prints, logs to MLflow
(only when MLFLOW_RUN_ID is set) and writes the model and result.json.

Output layout under OUT (an s3:// OUT is staged on each node's disk: checkpoints are uploaded
in the background as they are committed, the rest at the end; see checkpoint.RemoteMirror):
    checkpoints/latest, checkpoints/step-N/...   DeepSpeed ZeRO checkpoint (all ranks), every
                                                 `checkpoint_every` steps and at the end; the
                                                 newest `keep_checkpoints` tags are kept
    model/                                       consolidated fp32 model (safetensors) + tokenizer
    result.json                                  losses, throughput, fixed-batch loss check
"""

from __future__ import annotations

import argparse
import io
import json
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from components import storage
from components.manifest import Manifest
from components.train.checkpoint import (
    RemoteMirror,
    find_resume_tag,
    load_rank_state,
    remap_position,
    remove_tag,
    save_checkpoint,
    set_rng_states,
    step_tags,
    to_universal,
    to_universal_tag,
)
from components.train.config import ModelConfig, TrainConfig
from components.train.consolidate import consolidated_state_dict
from components.train.ds_config import deepspeed_config
from components.train.optim import apply_config_after_load, lr_lambda, make_optimizer
from components.train.resume import resume_changes
from components.hf_model import context_length
from components.train.model import build_or_load, load_consolidated, parameter_count
from components.train.telemetry import device_name, flops_per_token, memory_metrics, mfu, peak_flops

# Files a saved model directory owns; a tokenizer directory's copies of these are skipped.
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"}
# Exit status of a rank that saved a checkpoint after SIGTERM (EX_TEMPFAIL: run it again to resume).
PREEMPTED_EXIT = 75


def load_run_config(path: str) -> tuple[TrainConfig, ModelConfig]:
    data = json.loads(storage.read_text(path))
    return TrainConfig.model_validate(data["train"]), ModelConfig.model_validate(data["model"])


class PackedSequences:
    """The manifest's shards as one indexable list of int32 [seq_len] rows.

    Local shards are memory-mapped, so every rank shares the page cache rather than holding
    its own copy; s3:// shards are read into memory.
    """

    def __init__(self, manifest: Manifest):
        if manifest.kind != "packed-tokens":
            raise ValueError(f"expected a 'packed-tokens' manifest, got kind={manifest.kind!r}")
        if not manifest.shards:
            raise ValueError("the manifest lists no shards: nothing to train on")
        self.shards: list[np.ndarray] = []
        for shard in manifest.shards:
            if storage.is_s3(shard.uri):
                array = np.load(io.BytesIO(storage.read_bytes(shard.uri)), allow_pickle=False)
            else:
                array = np.load(storage.local_path(shard.uri), allow_pickle=False, mmap_mode="r")
            if array.ndim != 2 or array.dtype != np.int32:
                raise ValueError(f"{shard.uri}: expected int32 [n, seq_len], got {array.dtype} {array.shape}")
            self.shards.append(array)
        widths = {a.shape[1] for a in self.shards}
        if len(widths) != 1:
            raise ValueError(f"shards disagree on seq_len: {sorted(widths)}")
        self.seq_len = widths.pop()
        self.offsets = np.cumsum([0] + [len(a) for a in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, indices: np.ndarray) -> torch.Tensor:
        """Rows at global `indices`, as a LongTensor [len(indices), seq_len]."""
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        rows = [self.shards[s][i - self.offsets[s]] for s, i in zip(shard_of, indices)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def check(self, facts: dict[str, Any], train: TrainConfig, n_positions: int, vocab_size: int, world: int) -> None:
        """Fail in setup, with what to change, rather than mid-run."""
        if facts.get("seq_len", self.seq_len) != self.seq_len:
            raise ValueError(f"manifest says seq_len={facts['seq_len']} but the shards hold {self.seq_len}")
        if self.seq_len > n_positions:
            raise ValueError(
                f"seq_len ({self.seq_len}) exceeds the model's context length ({n_positions}): raise "
                "model.n_positions, or lower tokenizer.seq_len"
            )
        low = min(int(a.min()) for a in self.shards if a.size)
        high = max(int(a.max()) for a in self.shards if a.size)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids span [{low}, {high}], outside vocab_size {vocab_size}")
        per_pass = train.micro_batch_size * world
        if len(self) < per_pass:
            raise ValueError(
                f"only {len(self)} sequences, fewer than micro_batch_size x world_size = {per_pass}: "
                "tokenize more text or shrink the batch"
            )


def micro_batches(
    n: int, micro: int, rank: int, world: int, seed: int, epoch: int = 0, index: int = 0
) -> Iterator[np.ndarray]:
    """Sequence indices for this rank, micro batch by micro batch, forever.

    Each epoch is a permutation of all sequences drawn from (seed, epoch), cut to a multiple
    of micro * world and dealt round-robin to ranks (DistributedSampler's scheme). Same seed
    and world size, same order; no other randomness. (epoch, index) starts the stream at
    micro batch `index` of that epoch: where a checkpoint left off.
    """
    usable = n // (micro * world) * (micro * world)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)[:usable]
        mine = order[rank::world]
        for start in range(index * micro, len(mine), micro):
            yield mine[start : start + micro]
        index = 0
        epoch += 1


def data_position(micro_batches_taken: int, n: int, micro: int, world: int) -> tuple[int, int]:
    """(epoch, micro batch index within the epoch) after taking that many micro batches per rank."""
    per_epoch = n // (micro * world)
    return divmod(micro_batches_taken, per_epoch)


class MetricsShipper:
    """MLflow from rank 0, and only when the launcher injected MLFLOW_RUN_ID.

    The loop only enqueues; a background thread ships to the tracking server with retries and
    backoff. A server that is slow or down costs the loop nothing and loses nothing: what could
    not be sent waits and goes once the server answers again. Metrics are coalesced: the first
    logged step goes at once, later ones at most every `flush_s` seconds in one `log_batch` call
    (a call costs the server and this process a transaction's worth of CPU, on the same cores as
    the ranks). close() sends what is left and gives the thread `drain_s` seconds to deliver it,
    then says what it could not deliver.
    """

    MAX_METRICS_PER_CALL = 1000  # MLflow's limit for one log_batch

    def __init__(self, enabled: bool, system_metrics: bool = False, drain_s: float = 300.0, flush_s: float = 5.0):
        self.run_id = os.environ.get("MLFLOW_RUN_ID") if enabled else None
        if not self.run_id:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # Our own retry loop rides out outages; MLflow's (7 tries, minutes) would stall the queue.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import mlflow
        from mlflow.tracking import MlflowClient

        from components.mlflow_runs import resolve_tracking_uri

        self.mlflow = mlflow
        self.client = MlflowClient(resolve_tracking_uri())
        self.drain_s = drain_s
        self.flush_s = flush_s
        self.queue: queue.Queue = queue.Queue()
        self.closing = threading.Event()
        self.deadline: float | None = None
        self.active = False
        if system_metrics:  # CPU, memory, disk, network (GPU with nvidia-ml-py) sampled by MLflow's thread
            try:
                mlflow.set_tracking_uri(resolve_tracking_uri())
                mlflow.start_run(run_id=self.run_id, log_system_metrics=True)
                self.active = True
            except Exception as exc:  # the server may be down now; training goes on without them
                print(f"[train] MLflow system metrics off: {exc}", flush=True)
        self.thread = threading.Thread(target=self._ship, name="mlflow-shipper", daemon=True)
        self.thread.start()

    def params(self, params: dict[str, Any], ds_config: dict[str, Any]) -> None:
        if self.run_id:
            self.queue.put(("params", {f"train.{k}": v for k, v in params.items()}))
            self.queue.put(("dict", ds_config))

    def tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self.queue.put(("tags", dict(tags)))

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id:
            self.queue.put(("metrics", (dict(metrics), step, int(time.time() * 1000))))

    def close(self, ok: bool, drain_s: float | None = None) -> None:
        """drain_s: how long to wait for undelivered metrics, if not the constructor's."""
        if not self.run_id:
            return
        if drain_s is not None:
            self.drain_s = drain_s
        status = "FINISHED" if ok else "FAILED"
        if self.active:  # in this thread, which started it: stops the system-metrics sampler
            try:
                self.mlflow.end_run(status=status)
            except Exception as exc:
                print(f"[train] MLflow end_run failed ({type(exc).__name__}); the shipper marks the run", flush=True)
        self.queue.put(("end", status))
        self.deadline = time.monotonic() + self.drain_s
        self.closing.set()
        self.thread.join(self.drain_s + 5)
        if left := self.queue.qsize() + (1 if self.thread.is_alive() else 0):
            print(f"[train] MLflow unreachable for {self.drain_s:.0f} s: {left} batch(es) of metrics not delivered "
                  "(they are in result.json and the log)", flush=True)  # fmt: skip

    def _send(self, kind: str, payload: Any) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind == "metrics":  # [(values, step, stamp), ...], oldest first; a retry resumes where it failed
            while payload:
                batch, taken = [], 0
                for values, step, stamp in payload:
                    if batch and len(batch) + len(values) > self.MAX_METRICS_PER_CALL:
                        break
                    batch += [Metric(k, float(v), stamp, step) for k, v in values.items()]
                    taken += 1
                self.client.log_batch(self.run_id, metrics=batch)
                del payload[:taken]
        elif kind == "params":
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in payload.items()])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in payload.items()])
        elif kind == "dict":
            self.client.log_dict(self.run_id, payload, "ds_config.json")
        else:
            self.client.set_terminated(self.run_id, payload)

    def _ship(self) -> None:
        held = None  # an item taken off the queue while coalescing metrics, shipped next
        sent = float("-inf")
        while True:
            kind, payload = held or self.queue.get()
            held = None
            if kind == "metrics":
                self.closing.wait(max(0.0, sent + self.flush_s - time.monotonic()))
                payload = [payload]
                while held is None:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item[0] == "metrics":
                        payload.append(item[1])
                    else:
                        held = item
                sent = time.monotonic()
            if not self._deliver(kind, payload) or kind == "end":
                return

    def _deliver(self, kind: str, payload: Any) -> bool:
        """Sends one item, retrying with backoff; False once close()'s drain deadline passed. An
        item the server refuses (a 4xx answer but 429: e.g. a resumed run logging a changed param
        value into its run, which MLflow forbids) is dropped with a message, not retried: a retry
        would be refused again and hold back every metric queued behind it."""
        from mlflow.exceptions import MlflowException

        attempt = 0
        while True:
            try:
                self._send(kind, payload)
                break
            except MlflowException as exc:
                if 400 <= exc.get_http_status_code() < 500 and exc.get_http_status_code() != 429:
                    print(f"[train] MLflow refused the run's {kind} ({exc.message.splitlines()[0][:300]}); "
                          "not retried", flush=True)  # fmt: skip
                    return True
                if not self._wait(attempt, exc):
                    return False
                attempt += 1
            except Exception as exc:  # connection refused, 5xx, timeouts: wait and try again
                if not self._wait(attempt, exc):
                    return False
                attempt += 1
        if attempt:
            print(f"[train] MLflow reachable again after {attempt} retries", flush=True)
        return True

    def _wait(self, attempt: int, exc: Exception) -> bool:
        """Backs off before retry `attempt` + 1; False once close()'s drain deadline passed."""
        if attempt == 0:
            print(f"[train] MLflow unreachable ({type(exc).__name__}); metrics wait and are retried", flush=True)
        if self.deadline is not None and time.monotonic() > self.deadline:
            return False
        time.sleep(min(30.0, 0.5 * 2**attempt))
        return True


def fetch_base(uri: str, local_rank: int) -> Path:
    """The base model as a local directory on this node: local rank 0 downloads, the others wait."""
    from components.hf_model import check_model_dir, fetch_model_dir

    if not (uri.startswith(("models:/", "runs:/")) or storage.is_s3(uri)):
        check_model_dir(storage.local_path(uri), uri)
        return storage.local_path(uri)
    dest = Path(tempfile.gettempdir()) / f"homegrown-base-{os.environ.get('TORCHELASTIC_RUN_ID', os.getpid())}"
    pointer = dest / "model_dir.txt"
    if local_rank == 0:
        pointer.parent.mkdir(parents=True, exist_ok=True)
        storage.write_text(str(pointer), str(fetch_model_dir(uri, dest)))
    torch.distributed.barrier()
    return Path(pointer.read_text())


def copy_tokenizer(tokenizer_uri: str, model_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = storage.download_dir(tokenizer_uri, tmp)
        for file in sorted(source.iterdir()):
            if file.is_file() and file.name not in MODEL_FILES:
                shutil.copy2(file, model_dir / file.name)


@torch.no_grad()
def fixed_batch_loss(module, batch: torch.Tensor) -> float:
    was_training = module.training
    module.eval()
    loss = module(input_ids=batch, labels=batch).loss.item()
    module.train(was_training)
    return loss


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
        flag = torch.tensor([1 if self.signalled else 0], dtype=torch.int32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and self.signalled_at is None:  # another rank got it: count the grace from now
            self.signalled_at = time.monotonic()
        return bool(flag.item())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components.train.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="URI of the tokenizer step's manifest.json (packed-tokens)")
    parser.add_argument("--output", required=True, help="URI to write checkpoints/, model/ and result.json under")
    parser.add_argument("--config", required=True, help='JSON file: {"train": TrainConfig, "model": ModelConfig}')
    args = parser.parse_args(argv)
    started = time.perf_counter()

    # ---- setup: ranks, backend, config -----------------------------------------------------
    rank = int(os.environ.setdefault("RANK", "0"))
    world = int(os.environ.setdefault("WORLD_SIZE", "1"))
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # a lone rank run by hand: no mpi4py lookup
    os.environ.setdefault("MASTER_PORT", "29500")
    master = rank == 0
    preemption = Preemption()

    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator().device_name()
    if accelerator == "cpu":
        # DeepSpeed compiles a shared-memory all-reduce op (~40 s, needs g++) when its comm
        # backend starts; only inference_all_reduce uses it, training runs on gloo. Mark it
        # unavailable so a fresh (or compiler-less) container trains without building anything.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo" if accelerator == "cpu" else "nccl", verbose=False)
    if accelerator != "cpu":
        get_accelerator().set_device(int(os.environ["LOCAL_RANK"]))

    train, model_cfg = load_run_config(args.config)
    preemption.grace_s = train.preemption_grace_s
    manifest = Manifest.load(args.data)
    data = PackedSequences(manifest)
    seq_len = data.seq_len
    tokens_per_step = train.global_batch_size * seq_len

    # s3:// output: the ranks of each node write under one local staging dir (named by
    # torchrun's run id and the node's rank); checkpoints are mirrored to S3 as they are
    # committed, the model and result.json uploaded at the end. A local output (one shared
    # volume when there are several nodes) is written in place.
    local_rank = int(os.environ["LOCAL_RANK"])
    mirror = None
    if storage.is_s3(args.output):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", str(os.getpid()))
        out_dir = Path(tempfile.gettempdir()) / f"homegrown-train-{run_id}-node{os.environ.get('GROUP_RANK', '0')}"
        if local_rank == 0:
            shutil.rmtree(out_dir, ignore_errors=True)  # S3 holds the truth; a stale dir must not
        torch.distributed.barrier()
        mirror = RemoteMirror(storage.join(args.output, "checkpoints"), out_dir / "checkpoints", rank, local_rank,
                              train.keep_checkpoints)  # fmt: skip
    else:
        out_dir = storage.local_path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out_dir / "checkpoints"
    if mirror and train.resume and (pulled := mirror.pull()) and master:
        print(f"[train] fetched checkpoint {pulled} from {mirror.remote}", flush=True)
    if mirror and not train.resume and master:
        storage.remove_tree(mirror.remote)

    def checkpoint(step: int) -> float:
        """Save (and start mirroring) tag step-N; the seconds the save took."""
        if mirror:
            mirror.flush()  # the previous upload is done before its local files can be pruned
        save_started = time.perf_counter()
        tag = save_checkpoint(engine, ckpt_dir, step, client_state(step), train.keep_checkpoints, rank, world)
        save_s = time.perf_counter() - save_started
        if mirror:
            mirror.push(tag)
        return save_s

    # ---- which checkpoint to resume from (rank 0 decides, every rank loads it) ---------------
    resume = None  # (tag, world size that wrote it, tag to load)
    if master and train.resume and (found := find_resume_tag(ckpt_dir)):
        tag, saved_world = found
        # Optimizer state partitioned over another number of ranks: re-shard through DeepSpeed's
        # universal checkpoint format.
        partitioned = saved_world != world and list((ckpt_dir / tag).glob("*optim_states.pt"))
        resume = (tag, saved_world, to_universal_tag(tag) if partitioned else tag)
    if master and not train.resume and step_tags(ckpt_dir):
        # Starting over: an earlier run's tags would be pruned against (and mixed with) this one's.
        print(f"[train] resume=false: removing the checkpoints under {ckpt_dir}", flush=True)
        for _, tag in step_tags(ckpt_dir):
            remove_tag(ckpt_dir, tag)
        (ckpt_dir / "latest").unlink(missing_ok=True)
    picked = [resume]
    torch.distributed.broadcast_object_list(picked, src=0)
    resume = picked[0]
    if resume and resume[2] != resume[0]:
        converts = local_rank == 0 if mirror else master  # once per dir: each node's staging, or the shared one
        if converts:
            print(f"[train] {resume[0]} was written by {resume[1]} ranks, this run has {world}: "
                  "converting it to a universal checkpoint", flush=True)  # fmt: skip
            to_universal(ckpt_dir, resume[0])
        torch.distributed.barrier()
    universal = bool(resume and resume[2] != resume[0])
    ds_config = deepspeed_config(train, world, accelerator, load_universal=universal)
    accum = ds_config["gradient_accumulation_steps"]

    # ---- model, optimizer, schedule, engine ------------------------------------------------
    eos = manifest.facts.get("eos_token_id")
    vocab_size = int(manifest.facts["vocab_size"])
    base_dir = fetch_base(model_cfg.base, local_rank) if model_cfg.base else None
    model = build_or_load(model_cfg, vocab_size, train.seed, eos, base_dir)
    data.check(manifest.facts, train, context_length(model), model.config.vocab_size, world)
    n_params = parameter_count(model)
    if train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Before deepspeed.initialize: ZeRO-3 empties the parameters it partitions.
    per_token_flops = flops_per_token(model, model.config, seq_len)
    device_label = device_name(accelerator)
    peak = peak_flops(device_label, train.precision, train.peak_tflops)
    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train))
    weight_decays = [group["weight_decay"] for group in optimizer.param_groups]
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    device = engine.device
    torch.manual_seed(train.seed + rank)  # dropout differs per rank, reproducibly

    # ---- resume: model, optimizer, schedule, step, data position, RNG, loss history ----------
    done_steps, losses, position, changed = 0, [], (0, 0), {}
    resumed_from = resume[0] if resume else None
    if resume:
        tag, saved_world, load_tag = resume
        _, state = engine.load_checkpoint(str(ckpt_dir), tag=load_tag)
        if state is None:
            raise RuntimeError(f"{ckpt_dir / load_tag}: DeepSpeed could not load this checkpoint")
        done_steps = int(state["step"])
        changed = resume_changes(state.get("train", {}), state.get("model"), train, model_cfg, str(ckpt_dir / tag))
        if done_steps > train.max_steps:
            raise ValueError(f"checkpoint {tag} is past max_steps={train.max_steps}: raise max_steps")
        losses = [float(x) for x in state["losses"]]
        # DeepSpeed restored the checkpoint's lr, schedule, weight decay and clipping: this run's config rules.
        next_lr = apply_config_after_load(engine.optimizer, scheduler, train, done_steps, weight_decays)[0]
        position, skipped = remap_position(tuple(state["data_position"]), saved_world, world, train.micro_batch_size)
        if mine := load_rank_state(ckpt_dir / tag, rank, saved_world):
            set_rng_states(mine["rng"])  # a rank the saved run did not have keeps its fresh seed
        if master:
            # Tags past the one resumed (cut short, or not yet named by `latest`) would mix with
            # the ones this run writes: drop them.
            for step_n, later in step_tags(ckpt_dir):
                if step_n > done_steps:
                    remove_tag(ckpt_dir, later)
            moved = f", {skipped} sequences skipped to re-deal the batch over {world} ranks" if skipped else ""
            print(f"[train] resumed from {ckpt_dir / tag} ({saved_world} ranks): step {done_steps}, data position "
                  f"epoch {position[0]} micro batch {position[1]}{moved}", flush=True)  # fmt: skip
            for key, (old, new) in changed.items():
                print(f"[train] resume: {key} changed since {tag}: {old!r} -> {new!r}, applied from step "
                      f"{done_steps + 1}", flush=True)  # fmt: skip
            print(f"[train] resume: learning rate for step {done_steps + 1}: {next_lr:.6g} (schedule from this "
                  "run's config)", flush=True)  # fmt: skip
        torch.distributed.barrier()

    def client_state(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "data_position": list(data_position(step * accum, len(data), train.micro_batch_size, world)),
            "losses": list(losses),
            "world_size": world,
            "train": train.model_dump(),
            "model": model_cfg.model_dump(),
        }

    tracker = MetricsShipper(enabled=master, system_metrics=train.system_metrics)
    ok = False
    try:
        if master:
            print(
                f"[train] world_size={world} zero_stage={train.zero_stage} precision={train.precision} "
                f"accelerator={accelerator} params={n_params:,} sequences={len(data):,} seq_len={seq_len}",
                flush=True,
            )
            print(
                f"[train] tokens per step: {tokens_per_step:,} = {train.global_batch_size} sequences "
                f"({train.micro_batch_size} micro x {accum} accumulation x {world} ranks) x {seq_len}",
                flush=True,
            )
        tracker.params(
            {
                "world_size": world,
                "tokens_per_step": tokens_per_step,
                "parameters": n_params,
                "gradient_accumulation_steps": accum,
                "accelerator": accelerator,
                "device": device_label,
                "flops_per_token": per_token_flops,
                "peak_flops_per_device": peak or "unknown",
            },
            ds_config,
        )
        if resumed_from:  # tags, not params: MLflow params cannot change, and a retried step logs into its run
            tracker.tags({"resume.from_step": str(done_steps),
                          **{f"resume.changed.{key}": f"{old!r} -> {new!r}" for key, (old, new) in changed.items()}})

        # ---- the loop ----------------------------------------------------------------------
        batches = micro_batches(len(data), train.micro_batch_size, rank, world, train.seed, *position)
        saved_step = done_steps if resumed_from else -1
        loop_started = interval_started = time.perf_counter()
        interval_steps = 0
        for step in range(done_steps + 1, train.max_steps + 1):
            step_started = time.perf_counter()
            lr = engine.get_lr()[0]  # the rate this step's update uses
            loss_sum = torch.zeros((), device=device)
            for _ in range(accum):
                batch = data.take(next(batches)).to(device)
                loss = engine(input_ids=batch, labels=batch).loss  # HF shifts labels inside
                engine.backward(loss)
                engine.step()  # updates only on the accumulation boundary
                loss_sum += loss.detach().float()
            mean_loss = loss_sum / accum
            torch.distributed.all_reduce(mean_loss)
            mean_loss = (mean_loss / world).item()
            losses.append(mean_loss)
            step_s = time.perf_counter() - step_started
            interval_steps += 1

            if master and (step % train.log_every == 0 or step in (1, train.max_steps)):
                # Throughput over the steps since the last log line, not just this one.
                now = time.perf_counter()
                interval_step_s = (now - interval_started) / interval_steps
                interval_started, interval_steps = now, 0
                tokens_per_s = tokens_per_step / interval_step_s
                grad_norm = engine.get_global_grad_norm()
                metrics = {"train/loss": mean_loss, "train/lr": lr, "train/tokens_per_s": tokens_per_s}
                metrics.update(memory_metrics(accelerator))
                if grad_norm is not None:
                    metrics["train/grad_norm"] = float(grad_norm)
                if (utilisation := mfu(tokens_per_s, per_token_flops, world, peak)) is not None:
                    metrics["train/mfu"] = utilisation
                norm = f" | grad_norm {float(grad_norm):.3f}" if grad_norm is not None else ""
                shown_mfu = f" | MFU {utilisation:.1%}" if utilisation is not None else ""
                print(
                    f"[train] step {step}/{train.max_steps} | loss {mean_loss:.4f} | lr {lr:.2e}{norm} | "
                    f"{tokens_per_s:,.0f} tok/s{shown_mfu} | {interval_step_s * 1000:.0f} ms/step",
                    flush=True,
                )
                tracker.metrics(metrics, step=step)

            if train.checkpoint_every and step % train.checkpoint_every == 0:
                save_s = checkpoint(step)
                saved_step = step
                if master:  # a preempted run must also upload the tag it saves before the grace ends
                    preemption.warn_if_too_slow(step_s, save_s + (mirror.upload_s if mirror else 0.0))
            if preemption.agreed():
                if master:
                    left = preemption.left_s()
                    print(f"[train] SIGTERM: checkpointing step {step}"
                          + (f", {left:.0f} s of the {train.preemption_grace_s} s grace left" if left is not None else ""),
                          flush=True)  # fmt: skip
                if saved_step != step:
                    checkpoint(step)
                if mirror:
                    mirror.flush()
                if master:
                    where = mirror.remote if mirror else ckpt_dir
                    print(f"[train] preempted at step {step}, checkpoint step-{step} written to {where}; "
                          "run again with the same output to resume", flush=True)  # fmt: skip
                torch.distributed.barrier()
                torch.distributed.destroy_process_group()
                return PREEMPTED_EXIT  # the finally below marks the MLflow run FAILED
        train_s = time.perf_counter() - loop_started
        steps_run = train.max_steps - done_steps

        # ---- checkpoint, then consolidate on rank 0 -----------------------------------------
        fixed = data.take(np.arange(train.micro_batch_size)).to(device)
        engine_loss = fixed_batch_loss(engine, fixed)  # every rank: ZeRO-3 gathers weights in forward
        tag = f"step-{train.max_steps}"
        if saved_step != train.max_steps:
            checkpoint(train.max_steps)
        if mirror:
            mirror.flush()
            if world > int(os.environ.get("LOCAL_WORLD_SIZE", world)):
                mirror.complete(tag)  # the other nodes' ZeRO partitions, for consolidation
        torch.distributed.barrier()

        if master:
            consolidated = build_or_load(model_cfg, vocab_size, train.seed, eos, base_dir)
            load_consolidated(consolidated, consolidated_state_dict(ckpt_dir / tag, consolidated))
            consolidated_loss = fixed_batch_loss(consolidated, fixed.cpu())
            if model_cfg.lora:
                if model_cfg.lora.save_adapter:
                    consolidated.save_pretrained(out_dir / "adapter", safe_serialization=True)
                consolidated = consolidated.merge_and_unload()  # a plain model for evaluation and the registry
            model_dir = out_dir / "model"
            consolidated.save_pretrained(model_dir, safe_serialization=True)
            if manifest.facts.get("tokenizer_uri"):
                copy_tokenizer(manifest.facts["tokenizer_uri"], model_dir)

            steps_total = train.max_steps * tokens_per_step
            tokens_per_s = steps_run * tokens_per_step / train_s if steps_run else 0.0
            result = {
                "final_loss": losses[-1],
                "losses": losses,
                "steps": train.max_steps,
                "tokens": steps_total,
                # throughput of the steps this process ran (all of them unless it resumed)
                "tokens_per_s": tokens_per_s,
                "mfu": mfu(tokens_per_s, per_token_flops, world, peak),
                "flops_per_token": per_token_flops,
                "device": device_label,
                "steps_per_s": steps_run / train_s if steps_run else 0.0,
                "resumed_from_step": done_steps if resumed_from else None,
                "world_size": world,
                "zero_stage": train.zero_stage,
                "precision": train.precision,
                "accelerator": accelerator,
                "parameters": n_params,
                "tokens_per_step": tokens_per_step,
                "gradient_accumulation_steps": accum,
                "fixed_batch_loss_engine": engine_loss,
                "fixed_batch_loss_consolidated": consolidated_loss,
                "checkpoint_uri": storage.join(args.output, "checkpoints"),
                "checkpoint_tag": tag,
                "model_uri": storage.join(args.output, "model"),
                "data_digest": manifest.digest,
                "duration_s": time.perf_counter() - started,
            }
            summary = {"train/final_loss": losses[-1], "train/fixed_batch_loss": consolidated_loss}
            if result["mfu"] is not None:
                summary["train/mfu_overall"] = result["mfu"]
            tracker.metrics(summary, step=train.max_steps)
            if mirror:
                for part in ("model", "adapter"):
                    if (out_dir / part).is_dir():
                        storage.upload_dir(out_dir / part, storage.join(args.output, part))
            # last, atomically: result.json marks the output complete
            storage.write_text(storage.join(args.output, "result.json"), json.dumps(result, indent=2) + "\n")
            print(
                f"[train] done: final loss {losses[-1]:.4f}, {result['tokens_per_s']:,.0f} tok/s, "
                f"fixed-batch loss engine {engine_loss:.6f} / consolidated {consolidated_loss:.6f} -> {args.output}",
                flush=True,
            )
        torch.distributed.barrier()
        if mirror and local_rank == 0:
            shutil.rmtree(out_dir, ignore_errors=True)
        ok = True
    finally:
        # preempted: what is left of the grace, less a margin (close() may wait 5 s past it) to exit first
        left = preemption.left_s()
        tracker.close(ok, drain_s=None if left is None else max(1.0, left - 10.0))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
