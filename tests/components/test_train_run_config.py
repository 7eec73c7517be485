"""The worker's config file (one writer, one reader), its result file and the architecture
registry: the seams the launchers, the pipeline and the next model families plug into."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from components.train.config import LoraConfig, ModelConfig, TrainConfig
from components.train.run_config import read_worker_config, write_worker_config

TRAIN = TrainConfig(zero_stage=3, nproc_per_node=4, micro_batch_size=2, global_batch_size=16, max_steps=7,
                    learning_rate=3e-4, precision="bf16", offload_params=True, peak_tflops=312.0)  # fmt: skip
MODEL = ModelConfig(base="models:/tiny@champion", lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_worker_config_round_trips_locally_and_on_s3(tmp_path, bucket):
    for uri in (str(tmp_path / "deep" / "train.json"), f"s3://{bucket}/run/train-config.json"):
        write_worker_config(uri, TRAIN, MODEL)
        train, model = read_worker_config(uri)
        assert train == TRAIN and model == MODEL, uri
        assert train.model_dump() == TRAIN.model_dump() and model.model_dump() == MODEL.model_dump()
    written = json.loads((tmp_path / "deep" / "train.json").read_text())
    assert list(written) == ["train", "model"] and written["model"]["lora"]["target_modules"] == ["q_proj", "v_proj"]


def test_worker_config_refuses_unknown_and_missing_keys_naming_the_file(tmp_path):
    path = tmp_path / "train.json"
    write_worker_config(str(path), TRAIN, ModelConfig())
    good = json.loads(path.read_text())

    def read(data) -> str:
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError) as caught:
            read_worker_config(str(path))
        return str(caught.value)

    assert read({**good, "evaluate": {}}) == (
        f"{path}: unknown key(s) ['evaluate']; a worker config holds only ['train', 'model']")
    assert read({"train": good["train"]}) == f"{path}: missing key(s) ['model']; write it with write_worker_config"
    assert read({**good, "train": {**good["train"], "zero_stag": 2}}) == (
        f"{path}: invalid worker config: train.zero_stag: unknown key")
    assert read({**good, "model": {**good["model"], "n_head": 3}}) == (
        f"{path}: invalid worker config: model: Value error, n_embd (128) must be divisible by n_head (3)")
    assert read([good]) == f"{path}: expected a JSON object with keys ['train', 'model'], got list"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"^{path}: not a JSON worker config"):
        read_worker_config(str(path))


def test_unknown_architecture_is_refused_listing_the_known_ones():
    with pytest.raises(ValidationError, match=r"unknown model.architecture 'gpt3'; known: gpt2, llama, mistral, qwen2, qwen3"):
        ModelConfig(architecture="gpt3")
    assert ModelConfig().architecture == "gpt2"
    # a base brings its own architecture
    with pytest.raises(ValidationError, match="architecture: the architecture comes from model.base"):
        ModelConfig(architecture="llama", base="models:/b@c")


def _with_entry(make):
    from components.train import architectures

    architectures.ARCHITECTURES["tiny-llama"] = architectures.llama_config
    try:
        return make()
    finally:
        del architectures.ARCHITECTURES["tiny-llama"]


def test_gpt2_entry_builds_the_model_it_always_built():
    """The registry's gpt2 entry gives the config, weights and parameter count of the GPT2Config
    the worker built by hand before the registry existed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from components.train.model import build_model, parameter_count

    vocab, d, layers, positions = 64, 64, 2, 32
    model = build_model(ModelConfig(n_layer=layers, n_head=4, n_embd=d, n_positions=positions, dropout=0.1), vocab,
                        seed=7, eos_token_id=0)  # fmt: skip
    before = GPT2Config(vocab_size=vocab, n_positions=positions, n_layer=layers, n_head=4, n_embd=d, resid_pdrop=0.1,
                        embd_pdrop=0.1, attn_pdrop=0.1, tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                        attn_implementation="sdpa")  # fmt: skip
    assert type(model) is GPT2LMHeadModel and model.config.to_dict() == before.to_dict()
    # wte + wpe + per block (2 LayerNorms, qkv, attention out, MLP in and out) + final LayerNorm + untied head
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    assert parameter_count(model) == vocab * d + positions * d + layers * block + 2 * d + vocab * d == 110_336
    torch.manual_seed(7)
    reference = GPT2LMHeadModel(before)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_new_family_is_one_builder_and_one_registry_line():
    """A family registered in ARCHITECTURES takes the Llama family's keys; config validation and
    build_model take it with no other change."""
    from transformers import LlamaForCausalLM

    from components.train.model import build_model

    def build():
        cfg = ModelConfig(architecture="tiny-llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
        return build_model(cfg, 64, seed=1, eos_token_id=0)

    model = _with_entry(build)
    assert type(model) is LlamaForCausalLM and model.config.num_key_value_heads == 2
    assert model.config.intermediate_size == 256  # Llama's rule: 2/3 x 4 x 64 = 170, up to a multiple of 256
    with pytest.raises(ValidationError, match="unknown model.architecture 'tiny-llama'; known: gpt2, llama"):
        build()  # the entry is gone again


def test_adamw_is_fused_only_where_its_step_runs_on_a_gpu():
    """torch's fused AdamW kernel on GPUs; not with ZeRO-Offload (the step runs on CPU
    partitions) nor on CPU, where the reference implementation keeps the pinned losses."""
    from components.train.config import TrainConfig
    from components.train.optim import fused_adamw, make_optimizer

    class OnGpu(torch.nn.Parameter):
        is_cuda = True

    gpu = [OnGpu(torch.zeros(2, 2)), OnGpu(torch.zeros(2))]
    assert fused_adamw(gpu, TrainConfig()) is True
    assert fused_adamw(gpu, TrainConfig(zero_stage=2, offload_optimizer=True)) is False
    assert fused_adamw([*gpu, torch.nn.Parameter(torch.zeros(2))], TrainConfig()) is False
    assert fused_adamw([], TrainConfig()) is False
    cpu = make_optimizer(torch.nn.Linear(4, 4), TrainConfig())
    assert cpu.defaults["fused"] is None and cpu.defaults["foreach"] is None
