import posixpath

from pydantic import Field, field_validator

from components.config import Section


class RegisterConfig(Section):
    model_name: str = Field(
        "homegrown-demo", min_length=1, max_length=256,
        description="registered model name in MLflow (at most 256 characters, no / : ' or \", not a path "
        "that normalises to another name: MLflow's rules, plus quotes for its search filters)",
    )
    min_improvement: float = Field(
        0.0, ge=0, lt=1, description="relative bits-per-byte gain over the champion needed to promote"
    )
    max_bits_per_byte: float | None = Field(None, gt=0, description="absolute ceiling; None turns it off")
    max_language_regression: float | None = Field(
        None, ge=0, lt=1,
        description="fail the gate if any language's bits-per-byte is worse than the champion's by more than this "
        "share (0.02 = 2 %); None turns it off",
    )

    @field_validator("model_name")
    @classmethod
    def _valid_model_name(cls, name: str) -> str:
        # MLflow's _validate_model_name (mlflow/utils/validation.py); quotes would break the
        # registry's `name = '...'` search filters
        bad = sorted({c for c in name if c in "/:'\""})
        if bad or not name.strip() or posixpath.normpath(name) != name or name == "." or name.startswith(".."):
            raise ValueError(
                f"registry.model_name {name!r} is not a valid MLflow registered model name: "
                f"{'it contains ' + ' '.join(bad) if bad else 'it reads as a path'}; use letters, digits, - _ ."
            )
        return name
