from typing import Literal

from pydantic import Field

from components.config import Section


class EvaluateConfig(Section):
    batch_size: int = Field(8, ge=1, description="windows scored per forward pass")
    stride: int | None = Field(None, ge=1, description="sliding-window stride in tokens (default: the model's context, no overlap)")
    prompts: list[str] = Field(
        default_factory=lambda: ["The", "人人"], description="prompts for generated samples"
    )
    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(0.8, gt=0, description="for the sampled (non-greedy) generations")
    seed: int = Field(0)
    chat_samples: int = Field(
        4, ge=0, description="chat models: the first this many held-out conversations get their last reply generated "
        "(greedy, sampled and, with a champion, the champion's greedy) beside the reference reply",
    )
    chat_top_p: float = Field(
        1.0, gt=0, le=1, description="chat models: nucleus (top-p) sampling for the sampled replies; 1.0 samples "
        "the full distribution, as the pretraining samples do",
    )
    compare_champion: bool = Field(True, description="also score the registry's current champion on the same set")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where to run the model; auto picks cuda when available, else cpu"
    )
