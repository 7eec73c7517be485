"""The fp32 weights of a DeepSpeed checkpoint tag as one state dict, for every ZeRO stage.

ZeRO 1-3 (and DeepSpeed's bf16 optimizer) partition fp32 master weights over the ranks'
`*optim_states.pt`; DeepSpeed's zero_to_fp32 gathers them. ZeRO-0 is plain data parallelism:
rank 0's `mp_rank_00_model_states.pt` holds the whole module (zero_to_fp32 fails on it, its
param_shapes being None) and, when training in bf16/fp16, the optimizer wrapper's fp32 master
copies, which are the weights to keep. A shared (tied) weight comes out under one name, the one
the optimizer trained: the model it is loaded into ties the others to it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from components.train.optim import decay_groups

def consolidated_state_dict(tag_dir: Path, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{parameter or buffer name: fp32 tensor} of the checkpoint in tag_dir.

    module: a model built like the trained one (its parameter names and optimizer groups map a
    ZeRO-0 wrapper's fp32 master groups to names). Raises FileNotFoundError when tag_dir holds no
    model states, RuntimeError when the master weights do not fit the model.
    """
    # ZeRO-0..2 write mp_rank_00_model_states.pt (rank 0), ZeRO-3 zero_pp_rank_R_mp_rank_00_model_states.pt per rank
    found = sorted(tag_dir.glob("*model_states.pt"))
    if not found:
        raise FileNotFoundError(f"{tag_dir}: no *model_states.pt; not a DeepSpeed checkpoint tag")
    states = torch.load(found[0], map_location="cpu", weights_only=True)
    if states.get("ds_config", {}).get("zero_optimization", {}).get("stage", 0) > 0:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(tag_dir.parent), tag=tag_dir.name)
    else:
        state = zero0_state_dict(states, module)
    return drop_tied_aliases(state, module)


def drop_tied_aliases(state: dict[str, torch.Tensor], module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """state with one name per shared parameter (tied embeddings: lm_head.weight is
    model.embed_tokens.weight): the name module.named_parameters() gives it, which is the name
    the optimizer trained. The other names may hold a stale copy (ZeRO-0's module states next to
    the fp32 master) that loading after the trained name would write into the shared tensor."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    trained = {name for name, _ in module.named_parameters()}
    aliases = {name for group in names.values() if len(group) > 1 for name in group if name not in trained}
    return {name: tensor for name, tensor in state.items() if name not in aliases}


def zero0_state_dict(states: dict, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A ZeRO-0 checkpoint's weights: the module, with the trainable parameters replaced by the
    fp16/bf16 optimizer's fp32 masters where it keeps them (`fp32_groups`: a list of tensors per
    group, unfused; `fp32_groups_flat`: one flat tensor per group, fused). fp32 training keeps
    no masters: the module's weights are the weights."""
    weights = {name: t.float() if t.is_floating_point() else t for name, t in states["module"].items()}
    optimizer = states.get("optimizer") or {}
    if "fp32_groups" in optimizer:
        masters = [list(group) for group in optimizer["fp32_groups"]]
    elif "fp32_groups_flat" in optimizer:
        masters = []
        for flat, group in zip(optimizer["fp32_groups_flat"], decay_groups(module)):
            sizes = [p.numel() for _, p in group]
            if flat.numel() != sum(sizes):
                raise RuntimeError(f"a flat fp32 group holds {flat.numel()} values, the model's {sum(sizes)}")
            masters.append(list(torch.split(flat, sizes)))
    else:
        return weights
    groups = decay_groups(module)
    if [len(g) for g in masters] != [len(g) for g in groups]:
        raise RuntimeError(f"fp32 master groups of sizes {[len(g) for g in masters]} do not fit the model's "
                           f"optimizer groups {[len(g) for g in groups]}")  # fmt: skip
    for group, tensors in zip(groups, masters):
        for (name, param), master in zip(group, tensors):
            if master.numel() != param.numel():
                raise RuntimeError(f"{name}: the fp32 master has {master.numel()} values, the parameter {param.numel()}")
            weights[name] = master.float().reshape(param.shape).clone()
    return weights
