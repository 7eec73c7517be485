"""Periodic checkpoints and exact resume: a run killed mid-way and relaunched reproduces the
per-step losses of an uninterrupted run; SIGTERM (preemption) saves a checkpoint and exits."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.train.config import ModelConfig, TrainConfig
from components.train.launch import TrainError, torchrun_args, train_local, worker_env
from components.train.run_config import write_worker_config
from components.train.checkpoint import find_resume_tag, step_tags, tag_world
from components.train.data import micro_batches, remap_position
from tests.components.test_train import SEQ_LEN, make_packed_dataset
from tests.loopback import free_port

STEPS = 24
TRAIN = TrainConfig(
    zero_stage=2, nproc_per_node=2, micro_batch_size=4, global_batch_size=16, max_steps=STEPS,
    learning_rate=3e-3, warmup_steps=4, log_every=8, seed=1234, checkpoint_every=8, keep_checkpoints=2,
)  # fmt: skip
MODEL = ModelConfig(n_layer=2, n_head=4, n_embd=64, n_positions=SEQ_LEN, dropout=0.1)  # dropout: RNG matters
ROOT = Path(__file__).resolve().parents[2]
# A step takes ~35 ms here, so a run would finish before the test could signal it mid-way:
# the interrupted runs execute this file as the worker (see the bottom), which sleeps this
# long per micro batch. Losses do not depend on it.
SLOW_TAKE_S = 0.05
SLOW_SAVE_ENV = "HOMEGROWN_TEST_SLOW_SAVE_S"


def start(manifest_uri: str, out: Path | str, tmp: Path, launcher: list[str] | None = None,
          train: TrainConfig = TRAIN, model: ModelConfig = MODEL, slow_save_s: float = 0.0) -> subprocess.Popen:
    """The torchrun command train_local runs, in its own process group so it can be killed whole.
    slow_save_s: each checkpoint save pauses this long after the model states are written."""
    config = tmp / f"train-{time.monotonic_ns()}.json"
    write_worker_config(str(config), train, model)
    launcher = launcher or torchrun_args(train)  # train_local's
    command = [
        sys.executable, "-m", "torch.distributed.run", *launcher,
        __file__, "--data", manifest_uri, "--output", str(out), "--config", str(config),
    ]  # fmt: skip
    env = worker_env({"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                      SLOW_SAVE_ENV: str(slow_save_s)})  # fmt: skip
    with open(tmp / f"log-{time.monotonic_ns()}.txt", "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)


def run_logs(tmp: Path) -> str:
    """The output of every run start() launched under tmp."""
    return "".join(p.read_text() for p in sorted(tmp.glob("log-*.txt")))


def wait_for_latest(process: subprocess.Popen, out: Path, tag: str, timeout: float = 60) -> None:
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + timeout
    while not (latest.is_file() and latest.read_text().strip() == tag):
        assert process.poll() is None, f"the run ended (rc={process.returncode}) before checkpoint {tag}"
        assert time.monotonic() < deadline, f"no checkpoint {tag} after {timeout} s"
        time.sleep(0.01)


def test_micro_batches_resume_mid_epoch():
    full = micro_batches(40, micro=4, rank=1, world=2, seed=3)
    stream = [next(full).tolist() for _ in range(12)]  # 5 micro batches per rank per epoch
    resumed = micro_batches(40, micro=4, rank=1, world=2, seed=3, epoch=1, index=2)  # after 7 taken
    assert [next(resumed).tolist() for _ in range(5)] == stream[7:]


def test_find_resume_tag_skips_incomplete(tmp_path):
    ckpt = tmp_path / "checkpoints"
    for step in (8, 16):
        (ckpt / f"step-{step}").mkdir(parents=True)
        (ckpt / f"step-{step}" / "mp_rank_00_model_states.pt").write_bytes(b"x")
        (ckpt / f"step-{step}" / "rank-0-of-2.pt").write_bytes(b"x")
    (ckpt / "step-16" / "rank-1-of-2.pt").write_bytes(b"x")
    (ckpt / "step-24").mkdir()  # cut short: no files
    (ckpt / "latest").write_text("step-16")
    assert find_resume_tag(ckpt) == ("step-16", 2)
    (ckpt / "step-16" / "rank-1-of-2.pt").unlink()  # step-16 incomplete: fall back to step-8 ...
    assert find_resume_tag(ckpt) is None  # ... which lacks rank 1 too
    (ckpt / "step-8" / "rank-1-of-2.pt").write_bytes(b"x")
    assert find_resume_tag(ckpt) == ("step-8", 2)
    assert tag_world(ckpt / "step-24") is None
    assert find_resume_tag(tmp_path / "missing") is None


def test_remap_position_keeps_the_sequences_taken():
    assert remap_position((3, 10), saved_world=2, world=1, micro=4) == ((3, 20), 0)
    assert remap_position((3, 10), saved_world=2, world=4, micro=4) == ((3, 5), 0)
    assert remap_position((0, 3), saved_world=2, world=4, micro=4) == ((0, 2), 8)  # 24 taken -> 32


def test_train_error_flags_preemption():
    line = "[rank0]: [train] preempted at step 9, checkpoint step-9 written to /x; run again with the same output\n"
    assert TrainError(1, [], [line]).preempted
    assert not TrainError(1, [], ["ValueError: nope\n"]).preempted


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_exactly(tmp_path):
    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)

    # (a) uninterrupted
    reference = train_local(manifest_uri, str(tmp_path / "a"), TRAIN, MODEL)
    assert reference.steps == STEPS and len(reference.losses) == STEPS and reference.resumed_from_step is None
    tags = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir() if p.is_dir())
    assert tags == ["step-16", "step-24"]  # keep_checkpoints=2 pruned step-8

    # (b) SIGTERM once step-8 is committed: all ranks agree, save, exit PREEMPTED_EXIT
    out = tmp_path / "b"
    run = start(manifest_uri, out, tmp_path)
    wait_for_latest(run, out, "step-8")
    run.send_signal(signal.SIGTERM)  # torchrun, PID 1 of a TrainJob pod: it signals the ranks
    assert run.wait(timeout=60) != 0
    logs = run_logs(tmp_path)
    assert "preempted at step" in logs, logs[-3000:]
    assert re.search(r"SIGTERM: checkpointing step \d+, \d+ s of the 30 s grace left", logs), logs[-3000:]
    preempted_tag = (out / "checkpoints" / "latest").read_text().strip()
    assert preempted_tag != "step-24" and tag_world(out / "checkpoints" / preempted_tag) == 2
    assert not (out / "result.json").exists()

    # (c) relaunch, SIGKILL the whole process group as soon as step-16 is committed
    run = start(manifest_uri, out, tmp_path)
    wait_for_latest(run, out, "step-16")
    ranks = children(run.pid)  # torchrun starts each rank in a session of its own
    assert len(ranks) == TRAIN.nproc_per_node, ranks
    for pid in [run.pid, *ranks]:
        os.killpg(pid, signal.SIGKILL)
    run.wait(timeout=30)
    wait_gone(ranks)
    assert not (out / "result.json").exists(), "the run finished before it was killed"

    # (d) resume to the end: the same losses as the uninterrupted run
    resumed = train_local(manifest_uri, str(out), TRAIN, MODEL)
    assert resumed.resumed_from_step == 16
    assert resumed.steps == STEPS and len(resumed.losses) == STEPS
    assert resumed.losses[:16] == pytest.approx(reference.losses[:16], abs=1e-5)
    assert resumed.losses[16:] == pytest.approx(reference.losses[16:], abs=1e-5)
    assert resumed.fixed_batch_loss_engine == pytest.approx(reference.fixed_batch_loss_engine, abs=1e-5)
    assert json.loads((out / "result.json").read_text())["steps"] == STEPS


@pytest.mark.slow
def test_sigterm_gets_the_configured_grace_and_a_save_it_cuts_off_is_never_resumed(tmp_path):
    """SIGTERM to torchrun (PID 1 of a TrainJob pod): the ranks checkpoint within
    preemption_grace_s. Here a save takes longer than the grace, so torchrun SIGKILLs the ranks
    mid-save: the half-written tag is left alone and the relaunch resumes the previous one."""
    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    reference = train_local(manifest_uri, str(tmp_path / "a"), TRAIN, MODEL)
    out = tmp_path / "b"
    train = TRAIN.model_copy(update={"preemption_grace_s": 3})

    run = start(manifest_uri, out, tmp_path, train=train, slow_save_s=6)
    wait_for_latest(run, out, "step-8", timeout=120)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) != 0
    logs = run_logs(tmp_path)
    assert "take longer than train.preemption_grace_s (3 s)" in logs, logs[-3000:]
    assert re.search(r"SIGTERM: checkpointing step \d+, \d+ s of the 3 s grace left", logs), logs[-3000:]
    assert "preempted at step" not in logs
    cut = [tag for _, tag in step_tags(out / "checkpoints") if tag != "step-8"]
    assert cut and all(tag_world(out / "checkpoints" / t) is None for t in cut), "the cut-off save is incomplete"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-8"

    resumed = train_local(manifest_uri, str(out), TRAIN, MODEL)
    assert resumed.resumed_from_step == 8
    assert resumed.losses == pytest.approx(reference.losses, abs=1e-5)


@pytest.mark.slow
def test_train_local_passes_sigterm_on_and_reports_the_preemption(tmp_path):
    """The in-pod launcher (a KFP step) gets SIGTERM: torchrun and the ranks get it too, a
    checkpoint is written, and train_local raises TrainError with preempted=True."""
    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    train = TRAIN.model_copy(update={"max_steps": 2000, "checkpoint_every": 0, "log_every": 1})
    script = f"""
import json, sys
from components.train.config import ModelConfig, TrainConfig
from components.train.launch import TrainError, train_local
try:
    train_local({manifest_uri!r}, {str(tmp_path / "out")!r}, TrainConfig.model_validate_json({train.model_dump_json()!r}),
                ModelConfig.model_validate_json({MODEL.model_dump_json()!r}))
except TrainError as exc:
    print("RESULT", json.dumps({{"preempted": exc.preempted, "returncode": exc.returncode}}), flush=True)
    sys.exit(3)
"""
    launcher = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=worker_env())  # fmt: skip
    lines = []
    for line in launcher.stdout:
        lines.append(line)
        if line.startswith("[train] step 5/"):
            launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 3, "".join(lines[-40:])
    result = json.loads(next(line for line in lines if line.startswith("RESULT"))[len("RESULT") :])
    assert result["preempted"], "".join(lines[-40:])
    tag = (tmp_path / "out" / "checkpoints" / "latest").read_text().strip()
    assert tag_world(tmp_path / "out" / "checkpoints" / tag) == 2 and int(tag.split("-")[1]) < 2000


@pytest.mark.slow
def test_resume_on_fewer_ranks_through_a_universal_checkpoint(tmp_path):
    """2 ranks write step-8 of a Llama with tied embeddings; 1 rank resumes it and follows the
    2-rank run's loss curve, and the saved model is still tied."""
    from transformers import AutoModelForCausalLM

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    train = TRAIN.model_copy(update={"max_steps": 16, "checkpoint_every": 8})
    # no dropout: per-rank dropout streams differ by world size
    model = ModelConfig(architecture="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, max_position_embeddings=SEQ_LEN)  # fmt: skip
    assert model.tie_word_embeddings
    reference = train_local(manifest_uri, str(tmp_path / "two"), train, model)

    out = tmp_path / "one"
    shutil.copytree(tmp_path / "two" / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / "step-16")
    (out / "checkpoints" / "latest").write_text("step-8")  # as if the 2-rank run died after step 8

    resumed = train_local(manifest_uri, str(out), train.model_copy(update={"nproc_per_node": 1}), model)
    assert resumed.world_size == 1 and resumed.resumed_from_step == 8
    assert (out / "checkpoints" / "step-8-universal" / "zero").is_dir()
    assert resumed.losses[:8] == reference.losses[:8]  # carried over from the checkpoint
    # Same sequences per step, same optimizer state: only float summation order differs.
    assert resumed.losses[8:] == pytest.approx(reference.losses[8:], rel=1e-4)
    assert resumed.fixed_batch_loss_consolidated == pytest.approx(reference.fixed_batch_loss_consolidated, rel=1e-4)
    saved = AutoModelForCausalLM.from_pretrained(out / "model", use_safetensors=True)
    assert saved.lm_head.weight.data_ptr() == saved.model.embed_tokens.weight.data_ptr()


def wait_for_remote_latest(process: subprocess.Popen, uri: str, tag: str, timeout: float = 90) -> None:
    from components import storage

    deadline = time.monotonic() + timeout
    while not (storage.exists(f"{uri}/latest") and storage.read_text(f"{uri}/latest").strip() == tag):
        assert process.poll() is None, f"the run ended (rc={process.returncode}) before {uri}/latest = {tag}"
        assert time.monotonic() < deadline, f"no committed checkpoint {tag} at {uri} after {timeout} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_s3_output_mirrors_checkpoints_and_resumes_after_kill(tmp_path, bucket):
    """Checkpoints go to S3 as they are committed; a run killed on a node with an empty disk
    resumes from S3 and follows the uninterrupted run's losses."""
    from components import storage

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    reference = train_local(manifest_uri, str(tmp_path / "local"), TRAIN, MODEL)
    out = f"s3://{bucket}/runs/r1/train"

    run = start(manifest_uri, out, tmp_path)
    wait_for_remote_latest(run, f"{out}/checkpoints", "step-8")  # committed when step-16 was saved
    for pid in [run.pid, *children(run.pid)]:
        os.killpg(pid, signal.SIGKILL)
    run.wait(timeout=30)

    resumed = train_local(manifest_uri, out, TRAIN, MODEL)
    assert resumed.resumed_from_step in (8, 16)
    assert resumed.losses == pytest.approx(reference.losses, abs=1e-5)
    assert resumed.model_uri == f"{out}/model"
    files = storage.list_files(out)
    assert f"{out}/result.json" in files and f"{out}/model/model.safetensors" in files
    tags = {f.split("/checkpoints/")[1].split("/")[0] for f in files if "/checkpoints/step-" in f}
    assert tags == {"step-16", "step-24"}  # keep_checkpoints=2, pruned remotely too
    assert storage.read_text(f"{out}/checkpoints/latest").strip() == "step-24"


@pytest.mark.slow
def test_two_nodes_with_s3_output_train_like_one(tmp_path, bucket):
    """Two torchrun "nodes" (one rank each, separate staging dirs) writing to S3 give the same
    losses and consolidated model as one node with two ranks."""
    from components import storage

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    train = TRAIN.model_copy(update={"max_steps": 16})
    reference = train_local(manifest_uri, str(tmp_path / "local"), train, MODEL)
    out = f"s3://{bucket}/runs/nodes/train"
    port = free_port()
    nodes = [
        start(manifest_uri, out, tmp_path, train=train, launcher=[
            "--nnodes=2", f"--node_rank={node}", "--nproc_per_node=1",
            "--master_addr=127.0.0.1", f"--master_port={port}"])  # fmt: skip
        for node in (0, 1)
    ]
    for node in nodes:
        assert node.wait(timeout=300) == 0, run_logs(tmp_path)[-3000:]
    result = json.loads(storage.read_text(f"{out}/result.json"))
    assert result["world_size"] == 2
    assert result["losses"] == pytest.approx(reference.losses, abs=1e-6)
    assert result["fixed_batch_loss_consolidated"] == pytest.approx(reference.fixed_batch_loss_consolidated, abs=1e-6)
    step16 = [f for f in storage.list_files(f"{out}/checkpoints/step-16")]
    assert any("zero_pp_rank_1" in f for f in step16) and any("rank-1-of-2.pt" in f for f in step16)


def wait_gone(pids: list[int], timeout: float = 30) -> None:
    """Until each pid has exited (gone, or a zombie nobody reaps)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                break
            if state in ("Z", "X"):
                break
            assert time.monotonic() < deadline, f"pid {pid} still running"
            time.sleep(0.01)


def children(pid: int) -> list[int]:
    """Direct children of pid (torchrun's ranks), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


if __name__ == "__main__":  # one rank of a slowed-down worker, run by start() under torchrun
    from components.train import worker
    from components.train.data import PackedSequences

    take = PackedSequences.take

    def slow_take(self, indices):
        time.sleep(SLOW_TAKE_S)
        return take(self, indices)

    PackedSequences.take = slow_take
    if pause := float(os.environ.get(SLOW_SAVE_ENV) or 0):  # model states on disk, optimizer states not yet
        from deepspeed.runtime.engine import DeepSpeedEngine

        save_zero = DeepSpeedEngine._save_zero_checkpoint

        def slow_save_zero(self, *args, **kwargs):
            time.sleep(pause)
            return save_zero(self, *args, **kwargs)

        DeepSpeedEngine._save_zero_checkpoint = slow_save_zero
    sys.exit(worker.main())


# ---- config changed between the checkpoint and the resume ----------------------------------


def test_every_train_key_is_applied_or_must_match_on_resume():
    from components.train.resume import APPLIED_ON_RESUME, MUST_MATCH, resume_changes

    assert set(APPLIED_ON_RESUME) | set(MUST_MATCH) == set(TrainConfig.model_fields)
    assert not set(APPLIED_ON_RESUME) & set(MUST_MATCH)
    saved = TRAIN.model_dump()
    changed = TRAIN.model_copy(update={"learning_rate": 1e-4, "max_steps": 30, "grad_clip": 0.5})
    assert resume_changes(saved, MODEL.model_dump(), changed, MODEL, "ckpt") == {
        "train.learning_rate": (3e-3, 1e-4), "train.max_steps": (24, 30), "train.grad_clip": (1.0, 0.5)}  # fmt: skip
    old = {k: v for k, v in saved.items() if k != "peak_tflops"}  # written before the key existed: its default
    assert resume_changes(old, None, TRAIN, MODEL, "ckpt") == {}
    old_model = {k: v for k, v in MODEL.model_dump().items() if k != "architecture"}  # before the registry: gpt2
    assert resume_changes(saved, old_model, TRAIN, MODEL, "ckpt") == {}
    with pytest.raises(ValueError, match=r"^cannot resume from ckpt: it was written with train\.seed=1234 \(now 7\), "
                       r"train\.offload_optimizer=False \(now True\); restore"):  # fmt: skip
        resume_changes(saved, None, TRAIN.model_copy(update={"seed": 7, "offload_optimizer": True}), MODEL, "ckpt")
    with pytest.raises(ValueError, match=r"model\.n_embd=64 \(now 128\)"):
        resume_changes(saved, MODEL.model_dump(), TRAIN, MODEL.model_copy(update={"n_embd": 128}), "ckpt")


@pytest.mark.slow
def test_resume_applies_changed_hyperparameters_and_refuses_the_rest(tmp_path):
    """Resumed at step 4 with a new learning rate, schedule, clipping or weight decay: the new
    value is used from step 5 (the logged lr is the new schedule's), logged as a tag and printed;
    a changed seed or model shape is refused naming the key, from the tag's run-config.json
    before DeepSpeed loads anything, or (a tag written before that file) from the checkpoint's
    client state. All in one launch (tests/components/train_cases.py)."""
    from mlflow.tracking import MlflowClient

    from components.train.result import TrainResult
    from components.train.optim import lr_lambda
    from components.mlflow_runs import ensure_experiment
    from tests.components.train_cases import case, launch_cases

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=128, tokenizer=False)
    model = ModelConfig(n_layer=1, n_head=2, n_embd=32, n_positions=SEQ_LEN)
    train = TrainConfig(
        zero_stage=2, nproc_per_node=1, micro_batch_size=4, global_batch_size=8, max_steps=8, checkpoint_every=4,
        learning_rate=1e-2, warmup_steps=2, log_every=1, system_metrics=False,
    )  # fmt: skip
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment = ensure_experiment(tracking_uri, "test-resume-changes")
    changes = {
        "same": {},
        "lr": {"learning_rate": 1e-3},
        "schedule": {"max_steps": 12, "min_lr_ratio": 0.5, "warmup_steps": 6},
        "clip": {"grad_clip": 0.01},
        "decay": {"weight_decay": 20.0},
        "seed": {"seed": 7},
    }
    runs = {name: client.create_run(experiment).info.run_id for name in changes}
    cases = [case("ref", train, model)] + [
        case(name, train.model_copy(update=update), model, runs[name], copy_from="ref", copy_tag="step-4")
        for name, update in changes.items()
    ] + [
        case("shape", train, model.model_copy(update={"n_embd": 64, "n_head": 4}), copy_from="ref", copy_tag="step-4"),
        case("seed-old-tag", train.model_copy(update={"seed": 7}), model, copy_from="ref", copy_tag="step-4",
             drop_files=("run-config.json",)),
    ]  # fmt: skip
    logs = launch_cases(cases, manifest_uri, tmp_path / "runs", world=1, env={"MLFLOW_TRACKING_URI": tracking_uri})

    def result(name: str) -> TrainResult:
        return TrainResult.model_validate_json((tmp_path / "runs" / name / "result.json").read_text())

    ref = result("ref")
    same = result("same")
    assert same.resumed_from_step == 4 and same.losses == pytest.approx(ref.losses, abs=1e-6)
    for name, update in changes.items():
        if name == "seed":
            continue
        resumed = result(name)
        new = train.model_copy(update=update)
        assert resumed.resumed_from_step == 4 and len(resumed.losses) == new.max_steps, name
        # Step 5's loss is taken before its update: the weights are the checkpoint's.
        assert resumed.losses[:5] == pytest.approx(ref.losses[:5], abs=1e-6), name
        lrs = {m.step: m.value for m in client.get_metric_history(runs[name], "train/lr")}
        assert sorted(lrs) == list(range(5, new.max_steps + 1)), name
        for step, lr in lrs.items():  # the rate each step used: the new schedule's, from the resumed step
            assert lr == pytest.approx(new.learning_rate * lr_lambda(new)(step - 1), rel=1e-6), (name, step)
        tags = client.get_run(runs[name]).data.tags
        assert tags["resume.from_step"] == "4", name
        for key, value in update.items():
            if name == "same":
                continue
            shown = f"{getattr(train, key)!r} -> {value!r}"
            assert tags[f"resume.changed.train.{key}"] == shown, (name, tags)
            assert f"[train] resume: train.{key} changed since step-4: {shown}, applied from step 5" in logs, name
        if name != "same":  # the change took effect: the trajectory left the old one
            assert all(abs(a - b) > 1e-5 for a, b in zip(resumed.losses[5:8], ref.losses[5:8])), (name, resumed.losses)
    assert not {k for k in client.get_run(runs["same"]).data.tags if k.startswith("resume.changed.")}
    recorded = json.loads((tmp_path / "runs" / "ref" / "checkpoints" / "step-4" / "run-config.json").read_text())
    assert recorded == {"train": train.model_dump(), "model": model.model_dump()}
    for name in ("seed", "seed-old-tag"):
        error = (tmp_path / "runs" / name / "error.txt").read_text()
        where = tmp_path / "runs" / name / "checkpoints" / "step-4"
        assert error == (f"ValueError: cannot resume from {where}: it was written with train.seed=1234 (now 7); "
                         "restore those settings, use a fresh output dir, or set train.resume=false"), error
        assert not (tmp_path / "runs" / name / "result.json").exists()
    error = (tmp_path / "runs" / "shape" / "error.txt").read_text()
    where = tmp_path / "runs" / "shape" / "checkpoints" / "step-4"
    assert error == (f"ValueError: cannot resume from {where}: it was written with model.n_embd=32 (now 64), "
                     "model.n_head=2 (now 4); restore those settings, use a fresh output dir, or set "
                     "train.resume=false"), error
    # refused before DeepSpeed's load, which would fail on the weights' shapes first
    assert "size mismatch" not in logs and "Error(s) in loading state_dict" not in logs
