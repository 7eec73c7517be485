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
    compare_champion: bool = Field(True, description="also score the registry's current champion on the same set")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where to run the model; auto picks cuda when available, else cpu"
    )
