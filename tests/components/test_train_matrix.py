"""Every value TrainConfig accepts that a CPU can run trains end to end: ZeRO 0-3, with and
without optimizer/parameter offload where accepted, fp32 and bf16, from scratch and LoRA, on 1
and 2 ranks -- trained, checkpointed, consolidated into model/ (safetensors) and reloaded with
transformers at the loss the trained engine had; a Llama with tied embeddings on every ZeRO
stage, saved as one tensor and reloaded tied. fp16 (GPU only) is refused before launching,
naming the key."""

from __future__ import annotations

import itertools

import pytest
import torch
from pydantic import ValidationError

from components.train.config import LoraConfig, ModelConfig, TrainConfig
from components.train.launch import train_local
from components.train.result import TrainResult
from tests.components.test_train import SEQ_LEN, first_batch_loss, make_packed_dataset
from tests.components.test_train_base import make_base
from tests.components.train_cases import case, launch_cases

MICRO = 4
MODEL = ModelConfig(n_layer=1, n_head=2, n_embd=16, n_positions=SEQ_LEN)
# Tied input/output embeddings (the llama default), grouped-query attention: one stage each
LLAMA = ModelConfig(architecture="llama", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=32, max_position_embeddings=SEQ_LEN)  # fmt: skip
LLAMA_CASES = {"llama-z0-bf16": "z0-bf16", "llama-z1-fp32": "z1-fp32", "llama-z2-bf16": "z2-bf16",
               "llama-z3-fp32": "z3-fp32-oo-op"}  # fmt: skip


def matrix(world: int) -> dict[str, TrainConfig]:
    """Every (zero_stage, offload_optimizer, offload_params, precision) TrainConfig accepts, but
    fp16 (GPU only, refused on CPU); 2 steps of 2 micro batches each."""
    configs = {}
    for stage, optimizer, params, precision in itertools.product(range(4), (False, True), (False, True),
                                                                 ("fp32", "bf16", "fp16")):  # fmt: skip
        try:
            train = TrainConfig(
                zero_stage=stage, offload_optimizer=optimizer, offload_params=params, precision=precision,
                nproc_per_node=world, micro_batch_size=MICRO, global_batch_size=2 * MICRO * world,
                max_steps=2, warmup_steps=0, learning_rate=1e-2, log_every=1, system_metrics=False,
                activation_checkpointing=params,  # recomputation too, where the parameters are fetched per use
            )  # fmt: skip
        except ValidationError:
            continue
        if precision != "fp16":
            configs[f"z{stage}-{precision}" + "-oo" * optimizer + "-op" * params] = train
    return configs


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2])
def test_every_accepted_config_trains_consolidates_and_reloads(tmp_path, world):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from components.train.model import build_model

    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=64, tokenizer=False)
    configs = matrix(world)
    assert len(configs) == 18  # 2 precisions x (ZeRO-0, 1 and 2 with/without offload_optimizer, 3 with 4 offloads)
    base = make_base(tmp_path / "base")
    lora = ModelConfig(base=str(base), lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    loras = {f"lora-{name}": configs[name] for name in ("z0-bf16", "z3-fp32")} if world == 2 else {}
    cases = [case(name, train, MODEL) for name, train in configs.items()]
    cases += [case(name, train, lora) for name, train in loras.items()]
    llamas = {name: configs[config] for name, config in LLAMA_CASES.items()}
    cases += [case(name, train, LLAMA) for name, train in llamas.items()]
    launch_cases(cases, manifest_uri, tmp_path / "runs", world)

    initial = first_batch_loss(build_model(MODEL, 64, seed=1234, eos_token_id=0), tmp_path / "tok", MICRO)
    llama_initial = first_batch_loss(build_model(LLAMA, 64, seed=1234, eos_token_id=0), tmp_path / "tok", MICRO)
    failed = {c["name"]: (tmp_path / "runs" / c["name"] / "error.txt").read_text()
              for c in cases if (tmp_path / "runs" / c["name"] / "error.txt").exists()}  # fmt: skip
    assert not failed, failed
    fp32_losses, llama_fp32_losses = {}, {}
    for name, train in {**configs, **loras, **llamas}.items():
        out = tmp_path / "runs" / name
        result = TrainResult.model_validate_json((out / "result.json").read_text())
        assert result.world_size == world and result.zero_stage == train.zero_stage and len(result.losses) == 2, name
        assert (out / "model" / "model.safetensors").is_file() and not list((out / "model").glob("*.bin")), name
        reloaded = AutoModelForCausalLM.from_pretrained(out / "model", use_safetensors=True)
        assert next(reloaded.parameters()).dtype == torch.float32, name
        # the saved model is the consolidated one, exactly
        assert first_batch_loss(reloaded, tmp_path / "tok", MICRO) == pytest.approx(
            result.fixed_batch_loss_consolidated, abs=1e-5
        ), name
        if train.precision == "fp32":  # the engine computed in the weights that were saved
            assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=1e-5), name
        else:  # the engine computed in bf16 copies of the fp32 masters that were saved
            assert result.fixed_batch_loss_consolidated == pytest.approx(result.fixed_batch_loss_engine, abs=2e-3), name
            assert result.fixed_batch_loss_consolidated != result.fixed_batch_loss_engine, name
        if name.startswith("llama"):
            assert abs(result.fixed_batch_loss_consolidated - llama_initial) > 1e-3, f"{name}: the weights did not move"
            with safe_open(out / "model" / "model.safetensors", "pt") as weights:
                assert "lm_head.weight" not in weights.keys(), name  # one tensor for the tied pair
            assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr(), name
            if train.precision == "fp32":
                llama_fp32_losses[name] = result.losses + [result.fixed_batch_loss_consolidated]
        elif not name.startswith("lora"):
            assert abs(result.fixed_batch_loss_consolidated - initial) > 1e-3, f"{name}: the weights did not move"
            if train.precision == "fp32":
                fp32_losses[name] = result.losses + [result.fixed_batch_loss_consolidated]
    # Same seed, data and schedule: every stage and offload trains the same fp32 model.
    reference = fp32_losses.pop("z0-fp32")
    for name, losses in fp32_losses.items():
        assert losses == pytest.approx(reference, abs=1e-5), name
    # the tied weight gets both uses' gradients once, under ZeRO-1 and under ZeRO-3 with offload alike
    assert llama_fp32_losses["llama-z3-fp32"] == pytest.approx(llama_fp32_losses["llama-z1-fp32"], abs=1e-5)


def test_fp16_on_cpu_is_refused_before_launch_naming_the_key(tmp_path):
    train = TrainConfig(precision="fp16", nproc_per_node=1, micro_batch_size=4, global_batch_size=4, max_steps=1)
    with pytest.raises(ValueError, match=r"^train\.precision: 'fp16' is not supported on CPU"):
        train_local(str(tmp_path / "manifest.json"), str(tmp_path / "out"), train, MODEL)
    assert not (tmp_path / "out").exists()  # nothing launched, nothing written
