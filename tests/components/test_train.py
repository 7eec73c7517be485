"""The training step: DeepSpeed config, model, data order, and one real 2-rank torchrun run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from components.manifest import Manifest, shard_info
from components.train.config import ModelConfig, TrainConfig
from components.train.ds_config import deepspeed_config, gradient_accumulation_steps
from components.train.model import build_model
from components.train.data import PackedSequences, micro_batches
from components.train.optim import lr_lambda

VOCAB = 64
SEQ_LEN = 32


def make_tokenizer_dir(path: Path) -> Path:
    """A tiny word-level tokenizer over the ids the synthetic data uses."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<eos>": 0, **{f"t{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(path)
    return path


def make_packed_dataset(root: Path, sequences: int = 512, shards: int = 2, tokenizer: bool = True) -> str:
    """A learnable packed-tokens dataset: each row is an arithmetic progression mod VOCAB.

    After two tokens the rest of a row is determined, so the loss can fall far below ln(VOCAB).
    """
    rng = np.random.default_rng(0)
    start = rng.integers(0, VOCAB, size=(sequences, 1))
    stride = rng.integers(1, 4, size=(sequences, 1))
    data = ((start + stride * np.arange(SEQ_LEN)) % VOCAB).astype(np.int32)
    infos = []
    for i, part in enumerate(np.array_split(data, shards)):
        uri = str(root / "train" / f"part-{i:05d}.npy")
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        np.save(uri, part, allow_pickle=False)
        infos.append(shard_info(uri, records=len(part)))
    facts = {"seq_len": SEQ_LEN, "vocab_size": VOCAB, "eos_token_id": 0}
    if tokenizer:
        facts["tokenizer_uri"] = str(make_tokenizer_dir(root / "tokenizer"))
    manifest_uri = str(root / "manifest.json")
    Manifest(kind="packed-tokens", root=str(root), shards=infos, facts=facts).save(manifest_uri)
    return manifest_uri


def first_batch_loss(model, tok_root: Path, rows: int) -> float:
    """The loss the worker reports as fixed_batch_loss: its first micro batch (rows of shard 0)."""
    from components.train.model import fixed_batch_loss

    return fixed_batch_loss(model, torch.from_numpy(np.load(tok_root / "train" / "part-00000.npy")[:rows]).long())


# ---- DeepSpeed config ---------------------------------------------------------------------


def test_ds_config_accumulation():
    train = TrainConfig(micro_batch_size=4, global_batch_size=32, zero_stage=2, grad_clip=0.5)
    config = deepspeed_config(train, world_size=2)
    assert config["train_batch_size"] == 32
    assert config["train_micro_batch_size_per_gpu"] == 4
    assert config["gradient_accumulation_steps"] == 4
    assert config["zero_optimization"]["stage"] == 2
    assert config["gradient_clipping"] == 0.5
    assert config["bf16"]["enabled"] is False and config["fp16"]["enabled"] is False
    assert "optimizer" not in config and "scheduler" not in config  # torch AdamW + LambdaLR, no op build
    assert gradient_accumulation_steps(TrainConfig(micro_batch_size=8, global_batch_size=8), 1) == 1


def test_ds_config_divide_error_names_the_values():
    train = TrainConfig(micro_batch_size=8, global_batch_size=20)
    with pytest.raises(ValueError, match=r"global_batch_size \(20\).*micro_batch_size \(8\).*world_size \(2\)"):
        deepspeed_config(train, world_size=2)


def test_ds_config_precision():
    assert deepspeed_config(TrainConfig(precision="bf16", micro_batch_size=8, global_batch_size=16), 2, "cpu")["bf16"][
        "enabled"
    ]
    with pytest.raises(ValueError, match="fp16.*CPU"):
        deepspeed_config(TrainConfig(precision="fp16", micro_batch_size=8, global_batch_size=16), 2, "cpu")
    cuda = deepspeed_config(TrainConfig(precision="fp16", micro_batch_size=8, global_batch_size=16), 2, "cuda")
    assert cuda["fp16"]["enabled"] and not cuda["bf16"]["enabled"]


# ---- model, data order, schedule ----------------------------------------------------------


def test_model_untied_and_seeded():
    cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64, n_positions=SEQ_LEN)
    model = build_model(cfg, VOCAB, seed=7)
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr()
    assert model.config.n_positions == SEQ_LEN and model.config.vocab_size == VOCAB
    again = build_model(cfg, VOCAB, seed=7)
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
    batch = torch.zeros(2, SEQ_LEN, dtype=torch.long)
    assert model(input_ids=batch, labels=batch).loss.item() == pytest.approx(math.log(VOCAB), rel=0.1)


def test_micro_batches_deterministic_and_disjoint():
    def take(rank, k, seed=1):
        it = micro_batches(20, micro=4, rank=rank, world=2, seed=seed)
        return [next(it).tolist() for _ in range(k)]

    assert take(0, 4) == take(0, 4)
    assert take(0, 2) != take(0, 2, seed=2)
    epoch0 = [i for b in take(0, 2) + take(1, 2) for i in b]  # 2 micro batches per rank per epoch (16 of 20)
    assert len(set(epoch0)) == 16


def test_lr_schedule_warmup_then_cosine_floor():
    factor = lr_lambda(TrainConfig(max_steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.1) and factor(55) == pytest.approx(0.55)


def test_packed_sequences_index_across_shards_and_check(tmp_path):
    manifest_uri = make_packed_dataset(tmp_path, sequences=10, shards=3, tokenizer=False)
    manifest = Manifest.load(manifest_uri)
    data = PackedSequences(manifest)
    assert len(data) == 10 and data.seq_len == SEQ_LEN
    rows = np.concatenate([np.load(s.uri) for s in manifest.shards])
    picked = np.array([9, 0, 4, 3])
    batch = data.take(picked)
    assert torch.equal(batch["input_ids"], torch.from_numpy(rows[picked]).long())
    assert torch.equal(batch["labels"], batch["input_ids"])
    train = TrainConfig(micro_batch_size=4, global_batch_size=8)
    data.check(manifest.facts, train, context_length=SEQ_LEN, vocab_size=VOCAB, world=2)
    with pytest.raises(ValueError, match="raise model.n_positions"):
        data.check(manifest.facts, train, context_length=16, vocab_size=VOCAB, world=2)
    with pytest.raises(ValueError, match="outside vocab_size"):
        data.check(manifest.facts, train, context_length=SEQ_LEN, vocab_size=8, world=2)
    with pytest.raises(ValueError, match="only 10 sequences"):
        small = TrainConfig(micro_batch_size=8, global_batch_size=16)
        data.check(manifest.facts, small, context_length=SEQ_LEN, vocab_size=VOCAB, world=2)


def test_worker_cli_help():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "components.train", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--data" in done.stdout and "--output" in done.stdout


# ---- a real 2-rank DeepSpeed run ----------------------------------------------------------


@pytest.mark.slow
def test_torchrun_zero2_trains_checkpoints_and_consolidates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.train.launch import train_local
    from components.train.result import TrainResult

    manifest_uri = make_packed_dataset(tmp_path / "tok")
    out = tmp_path / "train"
    train = TrainConfig(
        zero_stage=2, nproc_per_node=2, micro_batch_size=8, global_batch_size=16, max_steps=40,
        learning_rate=3e-3, warmup_steps=5, log_every=10, seed=1234,
    )  # fmt: skip
    model_cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64, n_positions=SEQ_LEN)
    result = train_local(manifest_uri, str(out), train, model_cfg)

    assert result.steps == 40 and len(result.losses) == 40
    assert result.world_size == 2 and result.zero_stage == 2
    assert result.tokens == 40 * 16 * SEQ_LEN
    assert result.losses[0] > 3.5  # ~ln(64) at random init
    assert result.final_loss < 0.6 * result.losses[0], result.losses
    assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)

    assert (out / "checkpoints" / "latest").read_text().strip() == "step-40"
    assert (out / "model" / "model.safetensors").exists()
    assert not list((out / "model").glob("*.bin"))
    text = (out / "result.json").read_text()
    saved = json.loads(text)
    for key in ("final_loss", "losses", "steps", "tokens", "tokens_per_s", "world_size", "zero_stage", "duration_s",
                "parameters", "fixed_batch_loss_engine", "fixed_batch_loss_consolidated"):  # fmt: skip
        assert key in saved, key
    assert list(saved) == list(TrainResult.model_fields)  # written from a TrainResult: every field, in order
    assert TrainResult.model_validate_json(text).to_json() == text
    assert saved["accelerator"] == "cpu" and saved["gradient_accumulation_steps"] == 1

    model = AutoModelForCausalLM.from_pretrained(out / "model", use_safetensors=True)
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    assert tokenizer.eos_token_id == 0
    assert first_batch_loss(model, tmp_path / "tok", 8) == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)


@pytest.mark.slow
def test_torchrun_zero3_accumulation_logs_to_injected_mlflow_run(tmp_path):
    """ZeRO-3 with 2 micro-steps per update, parameters and optimizer offloaded, activations
    recomputed, logging into the run KFP's integration would inject."""
    from mlflow.tracking import MlflowClient

    from components.train.launch import train_local
    from components.mlflow_runs import ensure_experiment

    manifest_uri = make_packed_dataset(tmp_path / "tok", tokenizer=False)
    tracking_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    run_id = client.create_run(ensure_experiment(tracking_uri, "test-train")).info.run_id

    out = tmp_path / "train"
    train = TrainConfig(
        zero_stage=3, nproc_per_node=2, micro_batch_size=4, global_batch_size=16, max_steps=12,
        learning_rate=3e-3, warmup_steps=2, log_every=5, activation_checkpointing=True,
        offload_optimizer=True, offload_params=True, peak_tflops=0.05,  # a CPU's peak, so MFU is logged
    )  # fmt: skip
    model_cfg = ModelConfig(n_layer=2, n_head=4, n_embd=64, n_positions=SEQ_LEN)
    # the monitor logs after its first interval: well inside the ~1 s the ranks may train for
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_RUN_ID": run_id, "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}
    result = train_local(manifest_uri, str(out), train, model_cfg, env=env)

    assert result.zero_stage == 3 and result.steps == 12 and result.final_loss < result.losses[0]
    assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)
    assert (out / "checkpoints" / "latest").exists() and (out / "model" / "model.safetensors").exists()
    assert not (out / "model" / "tokenizer.json").exists()  # no tokenizer_uri in the facts

    run = client.get_run(run_id)
    assert run.data.params["train.world_size"] == "2"
    assert run.data.params["train.tokens_per_step"] == str(16 * SEQ_LEN)
    assert run.data.params["train.gradient_accumulation_steps"] == "2"
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [1, 5, 10, 12]
    assert {"train/lr", "train/tokens_per_s", "train/grad_norm", "train/mfu", "train/mfu_overall"} <= set(
        run.data.metrics
    )
    assert 0 < result.mfu < 1 and 0 < run.data.metrics["train/mfu"] < 1
    assert result.flops_per_token > 6 * 2 * 12 * 64 * 64  # at least the transformer blocks' weights
    assert any(key.startswith("system/") for key in run.data.metrics), sorted(run.data.metrics)
    artifacts = [a.path for a in client.list_artifacts(run_id)]
    assert "ds_config.json" in artifacts
    logged = client.download_artifacts(run_id, "ds_config.json", str(tmp_path))
    zero = json.loads(Path(logged).read_text())["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"


@pytest.mark.slow
def test_torchrun_failure_raises_train_error_with_output(tmp_path):
    from components.train.launch import TrainError, train_local

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=64, tokenizer=False)
    train = TrainConfig(nproc_per_node=2, micro_batch_size=4, global_batch_size=8, max_steps=2)
    too_short = ModelConfig(n_layer=1, n_head=2, n_embd=16, n_positions=16)  # < seq_len 32
    with pytest.raises(TrainError) as caught:
        train_local(manifest_uri, str(tmp_path / "train"), train, too_short)
    assert caught.value.returncode != 0
    assert any("raise model.n_positions" in line for line in caught.value.errors), caught.value.errors
    assert "exceeds the model's context length (16)" in str(caught.value)
