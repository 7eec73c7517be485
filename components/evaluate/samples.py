"""Generated samples: one greedy and one seeded sampled continuation per prompt."""

from __future__ import annotations

import torch

from components.hf_model import context_length


@torch.inference_mode()
def generate_samples(
    model, tokenizer, prompts: list[str], *, max_new_tokens: int, temperature: float, seed: int, device="cpu"
) -> list[dict[str, str]]:
    """[{prompt, greedy, sampled}]; prompt + new tokens always fit the model's context.

    A prompt too long for the context keeps its last tokens; an empty prompt starts from EOS.
    Each sampled generation reseeds with `seed`, so a prompt's sample does not depend on the
    other prompts.
    """
    max_len = context_length(model)
    new_tokens = min(max_new_tokens, max_len - 1)
    eos = tokenizer.eos_token_id
    model.eval()
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] or [eos]
        ids = ids[-(max_len - new_tokens) :]
        input_ids = torch.tensor([ids], device=device)
        common = dict(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=new_tokens,
            pad_token_id=eos,
            eos_token_id=eos,
        )
        greedy = model.generate(**common, do_sample=False)
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        sampled = model.generate(**common, do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        out.append(
            {
                "prompt": prompt,
                "greedy": tokenizer.decode(greedy[0, len(ids) :].tolist(), skip_special_tokens=True),
                "sampled": tokenizer.decode(sampled[0, len(ids) :].tolist(), skip_special_tokens=True),
            }
        )
    return out
