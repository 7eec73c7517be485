"""Kubernetes settings shared by the pipeline's config and the TrainJob launcher."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.config import Section


class Toleration(Section):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class SecretEnv(Section):
    """Environment variables filled from a Kubernetes Secret (secretKeyRef; the values never enter the config)."""

    secret_name: str = Field(min_length=1)
    keys: dict[str, str] = Field(description="secret key -> environment variable name", min_length=1)
