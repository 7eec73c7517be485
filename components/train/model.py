"""The model: a decoder of `model.architecture` built from `ModelConfig` and randomly
initialised from a seed, or a pretrained base (optionally with LoRA adapters) to continue
training; and the loss of one fixed batch, the check that consolidation kept the weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel

from components import storage
from components.hf_model import load_causal_lm
from components.train.architectures import model_config
from components.train.config import LoraConfig, ModelConfig


def build_model(
    model: ModelConfig, vocab_size: int, seed: int, eos_token_id: int | None = None
) -> PreTrainedModel:
    """A freshly initialised model of `model.architecture` (architectures.ARCHITECTURES) in fp32;
    the same seed gives the same weights on every rank. Raises ValueError for vocab_size < 1."""
    config = model_config(model, vocab_size, eos_token_id)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def apply_lora(module: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """Wrap module with peft LoRA adapters; the base weights are frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(module, config)


def fetch_base(uri: str, local_rank: int) -> Path:
    """The base model as a local directory on this node: local rank 0 downloads, the others wait
    (a collective: every rank calls it). Raises hf_model.ModelDirError for a directory that
    cannot be loaded (pickled weights, remote code, no config.json)."""
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


def build_or_load(
    model: ModelConfig, vocab_size: int, seed: int, eos_token_id: int | None = None, base_dir: Path | None = None
) -> torch.nn.Module:
    """From scratch, or the base in base_dir (model.base fetched) with LoRA if configured.

    The same arguments give the same weights on every rank (the seed also initialises LoRA).
    """
    if base_dir is None:
        return build_model(model, vocab_size, seed, eos_token_id)
    module = load_causal_lm(base_dir)
    if module.config.vocab_size < vocab_size:
        raise ValueError(
            f"{model.base}: its vocabulary ({module.config.vocab_size}) is smaller than the tokenizer's ({vocab_size}); "
            "tokenize with the base model's tokenizer"
        )
    torch.manual_seed(seed)  # LoRA's A matrices start random
    return apply_lora(module, model.lora) if model.lora else module


def load_consolidated(module: torch.nn.Module, state: dict[str, torch.Tensor], trained_only: bool = False) -> None:
    """Load a consolidated ZeRO state dict; a tied weight (lm_head = embeddings) appears once in it.

    trained_only (LoRA): load only the parameters that trained and keep the frozen ones as the
    module holds them (the fp32 base as loaded): a bf16/fp16 checkpoint has no fp32 masters of
    frozen weights, only their bf16/fp16 copies, which would round the whole base."""
    trained = {name for name, param in module.named_parameters(remove_duplicate=False) if param.requires_grad}
    if trained_only:
        state = {name: tensor for name, tensor in state.items() if name in trained}
    missing, unexpected = module.load_state_dict(state, strict=False)
    shared: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        shared.setdefault(id(param), []).append(name)
    tied = {name for names in shared.values() if len(names) > 1 and any(n in state for n in names) for name in names}
    if trained_only:  # frozen parameters and buffers stay as the module holds them
        missing = [name for name in missing if name in trained]
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"the consolidated checkpoint does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )


COMPUTE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the engine's forward runs in for train.precision (DeepSpeed casts the module to it)."""
    return COMPUTE_DTYPES[precision]


def model_inputs(batch: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A batch of data.take (LongTensors [rows, seq_len]) as the model's keyword arguments.

    Pretraining {"input_ids", "labels"} passes as it is. Packed conversations also carry
    position_ids (restarting at each conversation) and segment_ids, which become the additive
    block-diagonal causal attention_mask [rows, 1, seq_len, seq_len] of `dtype` (packing.
    block_causal_mask): it must be the forward's compute dtype (sdpa refuses a mask of another
    float dtype), so bf16 under train.precision bf16. segment_ids themselves are not a model input.
    """
    from components.sft.packing import block_causal_mask

    inputs = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
    if "segment_ids" in batch:
        inputs["attention_mask"] = block_causal_mask(batch["segment_ids"], dtype=dtype)
        inputs["position_ids"] = batch["position_ids"]
    return inputs


@torch.no_grad()
def fixed_batch_loss(module, batch: dict[str, torch.Tensor] | torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """The loss (nats) of module on one batch as the training loop computes it (model_inputs): the
    mean over the batch's labelled tokens, in eval mode (no dropout); the module's train/eval mode
    is restored. module: a model or DeepSpeed engine; batch: a data.take dict (a bare LongTensor
    [rows, seq_len] is a pretraining batch, labels = input_ids); dtype: the forward's compute dtype."""
    if isinstance(batch, torch.Tensor):
        batch = {"input_ids": batch, "labels": batch}
    was_training = module.training
    module.eval()
    loss = module(**model_inputs(batch, dtype)).loss.item()
    module.train(was_training)
    return loss
