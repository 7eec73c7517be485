"""MFU arithmetic (PaLM's formula checked against torch's FLOP counter for every family), the
peak FLOP/s table and the DeepSpeed offload settings."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from components.train.config import ModelConfig, TrainConfig
from components.train.ds_config import deepspeed_config
from components.train.model import build_model
from components.train.telemetry import flops_per_token, matmul_parameters, mfu, peak_flops

VOCAB, SEQ, BATCH = 512, 64, 2
FAMILIES = ("gpt2", "llama", "mistral", "qwen2", "qwen3")
# The counter's table has SDPA's CUDA kernels but not the CPU flash kernel SDPA runs here (it
# would count no attention at all): map that one onto the counter's own SDPA formulas, which
# count what it counts for the flash kernel on a GPU.
CPU_SDPA = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(q, k, v),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: (
        lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(grad, q, k, v)
    ),
}


def family_config(family: str, tied: bool, attn: str):
    """A small transformers config of `family`: 2 layers, 128 wide, 4 query heads; GQA (2 K/V heads)
    and SwiGLU (344) for the Llama-style families; Qwen3 with head_dim 64 != 128 / 4."""
    import transformers

    if family == "gpt2":
        return transformers.GPT2Config(n_layer=2, n_head=4, n_embd=128, n_positions=SEQ, vocab_size=VOCAB,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=tied,
                                       attn_implementation=attn)  # fmt: skip
    shape = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=344, max_position_embeddings=SEQ, vocab_size=VOCAB, tie_word_embeddings=tied,
                 attn_implementation=attn)  # fmt: skip
    if family == "qwen3":
        shape["head_dim"] = 64
    config_class = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig,
                    "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config}[family]  # fmt: skip
    return config_class(**shape)


def counted_per_token(model: torch.nn.Module) -> tuple[float, set[str]]:
    """FLOPs per token FlopCounterMode counts over a real forward + loss.backward(), and its ops."""
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    return counter.get_total_flops() / (BATCH * SEQ), {str(op) for op in counter.get_flop_counts()["Global"]}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_flops_per_token_matches_the_flop_counter_for_every_family(attn):
    from transformers import AutoModelForCausalLM

    for family in FAMILIES:
        for tied in (True, False):
            config = family_config(family, tied, attn)
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(config)
            assert model.config._attn_implementation == attn
            assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
            counted, ops = counted_per_token(model)
            estimate = flops_per_token(model, model.config, SEQ)
            layers, heads = config.num_hidden_layers, config.num_attention_heads
            head_dim = 64 if family == "qwen3" else 32
            case = f"{family} {attn} tied={tied}: estimate {estimate:,.0f}, counted {counted:,.0f}"
            assert abs(estimate / counted - 1) < 0.05, case
            if attn == "eager":  # QK^T and AV as bmm: the counter counts exactly the formula
                assert "aten.bmm" in ops, case
                assert estimate == pytest.approx(counted, rel=1e-9), case
            else:  # the flash kernel's backward recomputes QK^T: 14 instead of 12 L.H.Q.T
                assert "aten._scaled_dot_product_flash_attention_for_cpu" in ops, case
                assert estimate + 2 * layers * heads * head_dim * SEQ == pytest.approx(counted, rel=1e-9), case


def test_flops_per_token_is_palm_6n_plus_attention():
    cfg = ModelConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024)
    model = build_model(cfg, vocab_size=50257, seed=0)
    trainable, frozen = matmul_parameters(model)
    # GPT-2 small's matmul weights: 12 layers x (qkv 3 + out 1 + MLP 8) x 768^2, the untied
    # 50257 x 768 head; embeddings (wte, wpe), biases and LayerNorm scales left out
    assert frozen == 0
    assert trainable == 12 * 12 * 768**2 + 50257 * 768
    per_token = flops_per_token(model, model.config, seq_len=1024)
    assert per_token == 6 * trainable + 12 * 12 * 12 * 64 * 1024
    assert 0.85e9 < per_token < 0.86e9  # 6 x 123.5M + 113M attention: ~0.854 GFLOPs per token

    for p in model.transformer.parameters():  # frozen base (as under LoRA): no weight gradients
        p.requires_grad_(False)
    frozen_trainable, frozen_count = matmul_parameters(model)
    assert frozen_trainable == 50257 * 768 and frozen_count == trainable - frozen_trainable
    assert flops_per_token(model, model.config, 1024) == per_token - 2 * frozen_count


def test_tied_head_counts_once_as_a_matmul_and_frozen_with_its_embedding():
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tied = AutoModelForCausalLM.from_config(family_config("llama", True, "sdpa"))
    untied = AutoModelForCausalLM.from_config(family_config("llama", False, "sdpa"))
    assert matmul_parameters(tied) == matmul_parameters(untied)
    # per layer: q 128x128, k and v 128x64 (2 of 4 heads), o 128x128, SwiGLU 3 x 128x344; head 128x512
    assert matmul_parameters(tied)[0] == 2 * (2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 344) + 128 * VOCAB
    tied.get_input_embeddings().weight.requires_grad_(False)
    assert matmul_parameters(tied)[1] == 128 * VOCAB  # the frozen table is a frozen head


def test_peak_flops_table_and_override():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp16") == 312e12
    assert peak_flops("NVIDIA A10G", "bf16") == 70e12
    assert peak_flops("NVIDIA H100 80GB HBM3", "fp32") is None  # no table for fp32/TF32
    assert peak_flops("cpu", "bf16") is None
    assert peak_flops("cpu", "fp32", override_tflops=2.0) == 2e12
    assert mfu(1000.0, 1e9, world_size=2, peak=1e12) == pytest.approx(0.5)
    assert mfu(1000.0, 1e9, world_size=2, peak=None) is None


def test_offload_settings_need_the_right_zero_stage():
    ds = deepspeed_config(TrainConfig(zero_stage=3, offload_optimizer=True, offload_params=True, micro_batch_size=4,
                                      global_batch_size=8), world_size=2, accelerator="cuda")  # fmt: skip
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": True}
    assert ds["zero_force_ds_cpu_optimizer"] is False
    assert "offload_param" not in deepspeed_config(TrainConfig(zero_stage=2), 2)["zero_optimization"]
    with pytest.raises(ValidationError, match="offload_params needs zero_stage 3"):
        TrainConfig(zero_stage=2, offload_params=True)
    with pytest.raises(ValidationError, match="offload_optimizer needs zero_stage >= 1"):
        TrainConfig(zero_stage=0, offload_optimizer=True)
    assert deepspeed_config(TrainConfig(), 2, load_universal=True)["checkpoint"] == {"load_universal": True}


def test_progress_bar_follows_step_lines(capsys):
    from components.train.launch import Progress

    progress = Progress(300)
    for line in ("[train] step 10/300 | loss 4.1\n", "a warning\n", "[train] step 20/300 | loss 3.9\n"):
        progress.show(line)
    assert progress.bar.n == 20
    progress.close()
    assert "a warning" in capsys.readouterr().out
