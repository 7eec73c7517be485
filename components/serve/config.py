"""The `serve:` section of a run config: how the deploy step serves the champion on the cluster as a
KServe InferenceService (components/serve/inference_service.py, components/serve/deploy.py).

Placement (tolerations, node selector) and the GPU resource name come from the `cluster:` section;
this section holds what is the endpoint's own. With no `serve:` section the pipeline deploys nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from components.config import Section

HF_RUNTIME = "kserve-huggingfaceserver"  # KServe's Hugging Face ClusterServingRuntime (config/runtimes/)


class ServeConfig(Section):
    name: str | None = Field(
        None, max_length=45, description="InferenceService name (a DNS-1035 label, at most 45 characters so "
        "Knative's revision and route names fit); default: registry.model_name made into one",
    )  # fmt: skip
    namespace: str | None = Field(None, description="namespace of the InferenceService; default: the deploy step's own")
    runtime: str = Field(HF_RUNTIME, min_length=1, description="ServingRuntime / ClusterServingRuntime serving the model")
    backend: Literal["auto", "vllm", "huggingface"] = Field(
        "auto", description="the HF runtime's --backend: auto uses vLLM on GPUs where it supports the architecture, "
        "else transformers",
    )  # fmt: skip
    max_model_len: int | None = Field(
        None, ge=1, description="the runtime's --max_model_len (context length it serves); default: the model's"
    )
    args: list[str] = Field(
        default_factory=list, description="more runtime arguments, e.g. ['--dtype=bfloat16']; --model_name and "
        "--model_dir are the runtime's own",
    )  # fmt: skip
    gpus: int = Field(1, ge=0, description="GPUs per replica (cluster.accelerator_type); 0 serves on CPU")
    cpu: str | None = Field("4", description="CPU request = limit per replica; null: the runtime's default")
    memory: str | None = Field("16Gi", description="memory request = limit per replica; null: the runtime's default")
    min_replicas: int = Field(1, ge=0, description="0 lets Knative scale the endpoint to zero when idle")
    max_replicas: int = Field(1, ge=1, description="upper bound of Knative's autoscaler")
    canary_traffic_percent: int = Field(
        10, ge=0, le=100, description="share of requests a new champion gets while the previous revision keeps the "
        "rest; 0 or 100: no canary, the new champion takes all traffic (`homegrown rollback` moves it back)",
    )  # fmt: skip
    service_account: str | None = Field(
        None, description="ServiceAccount of the predictor pods, whose Secrets give KServe's storage initializer "
        "the S3 credentials; default: cluster.service_account",
    )  # fmt: skip
    ready_timeout_s: float = Field(1800, gt=0, description="how long the deploy step waits for Ready (model download "
                                   "and load included) before it fails")  # fmt: skip
    smoke_prompt: str = Field("Hello", min_length=1, description="the completion prompt the deploy step sends once Ready")
    smoke_max_tokens: int = Field(8, ge=1, le=256, description="max_tokens of that request")
    smoke_timeout_s: float = Field(120, gt=0, description="how long that request may take (a cold start included)")

    @field_validator("args")
    @classmethod
    def _not_ours(cls, args: list[str]) -> list[str]:
        owned = [a for a in args if a.split("=", 1)[0] in ("--model_name", "--model_dir", "--backend", "--max_model_len")]
        if owned:
            raise ValueError(f"serve.args: {', '.join(owned)} is set by homegrown (model_name and model_dir by the "
                             "runtime; backend and max_model_len are keys of serve:)")  # fmt: skip
        return args

    @property
    def canary(self) -> int | None:
        """The canary share a new champion starts with; None when it takes all traffic at once."""
        return self.canary_traffic_percent if 0 < self.canary_traffic_percent < 100 else None
