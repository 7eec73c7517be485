"""MFU arithmetic (PaLM's formula), the peak FLOP/s table and the DeepSpeed offload settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from components.train.config import ModelConfig, TrainConfig
from components.train.ds_config import deepspeed_config
from components.train.model import build_model
from components.train.telemetry import flops_per_token, matmul_parameters, mfu, peak_flops


def test_flops_per_token_is_palm_6n_plus_attention():
    cfg = ModelConfig(n_layer=12, n_head=12, n_embd=768, n_positions=1024)
    model = build_model(cfg, vocab_size=50257, seed=0)
    trainable, frozen = matmul_parameters(model)
    # GPT-2 small: 124.4M with the untied 38.6M lm_head; embeddings (wte 38.6M, wpe 0.8M) left out
    assert frozen == 0
    assert trainable == sum(p.numel() for p in model.parameters()) - 50257 * 768 - 1024 * 768
    per_token = flops_per_token(model, model.config, seq_len=1024)
    assert per_token == 6 * trainable + 12 * 12 * 12 * 64 * 1024
    assert 0.85e9 < per_token < 0.86e9  # 6 x 123.6M + 113M attention: ~0.855 GFLOPs per token

    for p in model.transformer.parameters():  # frozen base (as under LoRA): no weight gradients
        p.requires_grad_(False)
    frozen_trainable, frozen_count = matmul_parameters(model)
    assert frozen_trainable == 50257 * 768 and frozen_count == trainable - frozen_trainable
    assert flops_per_token(model, model.config, 1024) == per_token - 2 * frozen_count


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
