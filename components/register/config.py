from pydantic import Field

from components.config import Section


class RegisterConfig(Section):
    model_name: str = Field("homegrown-demo", min_length=1, description="registered model name in MLflow")
    min_improvement: float = Field(
        0.0, ge=0, lt=1, description="relative bits-per-byte gain over the champion needed to promote"
    )
    max_bits_per_byte: float | None = Field(None, gt=0, description="absolute ceiling; None turns it off")
    max_language_regression: float | None = Field(
        None, ge=0, lt=1,
        description="fail the gate if any language's bits-per-byte is worse than the champion's by more than this "
        "share (0.02 = 2 %); None turns it off",
    )
