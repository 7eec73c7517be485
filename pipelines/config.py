"""The run configuration: one pydantic model loaded from YAML, unknown keys rejected."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from components.clean.config import CleanConfig
from components.config import Section
from components.evaluate.config import EvaluateConfig
from components.k8s import SecretEnv, Toleration
from components.register.config import RegisterConfig
from components.serve.config import ServeConfig
from components.sft.config import SftConfig
from components.sft.template import CHATML_SPECIAL_TOKENS
from components.tokenizer.config import TokenizerConfig
from components.train.config import ModelConfig, TrainConfig


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid; the message says what to fix."""


class MlflowConfig(Section):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default: MLFLOW_TRACKING_URI, else SQLite under ./runs"
    )
    experiment: str = Field("homegrown", min_length=1)


class ClusterConfig(Section):
    """Kubernetes settings applied when the pipeline is compiled for a cluster; ignored locally."""

    image: str | None = Field(
        None, description="image of the CPU steps, built from docker/steps.Dockerfile and pushed to your registry "
        "(repository:tag, or repository@sha256:... to pin it; tags are mutable); required to compile for a cluster",
    )
    train_image: str | None = Field(
        None, description="CUDA + DeepSpeed image of the train step (docker/trainer.Dockerfile); required when a "
        "step runs on GPUs (gpus > 0); CPU training uses `image`",
    )
    accelerator_type: str = Field("nvidia.com/gpu", description="resource name of the GPUs the train step asks for")
    gpus: int = Field(0, ge=0, description="GPUs for the train step (0 = CPU training)")
    train_cpu: str | None = Field(None, description="CPU request/limit of the train step, e.g. '8'")
    train_memory: str | None = Field(None, description="memory request/limit of the train step, e.g. '64Gi'")
    tolerations: list[Toleration] = Field(default_factory=list, description="tolerations of the train step")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels the train step needs")
    config_map: str | None = Field(
        "homegrown-steps", description="ConfigMap whose keys become every step's env (MLFLOW_TRACKING_URI, AWS_ENDPOINT_URL)"
    )
    secrets: list[SecretEnv] = Field(default_factory=list, description="Secrets exposed to every step as env")
    data_pvc: str | None = Field(None, description="PVC mounted at /data in every step (then data_root: /data/...)")
    retries: int = Field(1, ge=0, le=10, description="retries of a failed step (preempted node, flaky network)")
    train_nodes: int = Field(
        1, ge=1, description="nodes for training; > 1 runs it as a Kubeflow Trainer TrainJob the train step launches"
    )
    train_runtime: str = Field("torch-distributed", description="ClusterTrainingRuntime a multi-node TrainJob uses")
    namespace: str | None = Field(None, description="namespace of TrainJobs; default: the train step's own")
    service_account: str | None = Field(
        None, description="ServiceAccount of the TrainJob's pods (the chart's homegrown-steps account by default)"
    )


class RunConfig(Section):
    name: str = Field("homegrown", pattern=r"^[a-z0-9][a-z0-9-]*$", description="run name prefix (lowercase, digits, -)")
    corpus: str | None = Field(
        None, description="URI of the raw corpus to pretrain on: a JSONL(.gz) file or a directory/prefix of them; "
        "null with sft and model.base (instruction tuning of a pretrained model only)",
    )
    data_root: str = Field("runs/data", description="URI under which each run writes its data")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegisterConfig = Field(default_factory=RegisterConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    sft: SftConfig | None = Field(
        None, description="instruction tuning into a chat model: after pretraining on `corpus`, or of model.base "
        "when there is no corpus; null: pretraining only",
    )
    serve: ServeConfig | None = Field(
        None, description="deploy each new champion as a KServe InferenceService (the deploy step, on a cluster); "
        "null: no endpoint",
    )

    @model_validator(mode="before")
    @classmethod
    def _chat_model_name(cls, data: Any) -> Any:
        """A chat model is registered under its own name unless one is given (`<name>-chat`): the
        gate compares it with a champion scored on conversations, never with a base model."""
        if not isinstance(data, dict) or not data.get("sft"):
            return data
        registry = data.get("registry")
        if registry is None or (isinstance(registry, dict) and "model_name" not in registry):
            name = data.get("name", "homegrown")
            return {**data, "registry": {**(registry or {}), "model_name": f"{name}-chat"}}
        return data

    @property
    def stages(self) -> tuple[str, ...]:
        """What the DAG runs: ("pretrain",), ("pretrain", "sft") or ("sft",) (of model.base)."""
        return (*(("pretrain",) if self.corpus else ()), *(("sft",) if self.sft else ()))

    @model_validator(mode="after")
    def _stages(self) -> "RunConfig":
        if self.corpus is None and self.sft is None:
            raise ValueError("corpus: required (the raw corpus to pretrain on), unless sft is set with model.base")
        if self.sft is None:
            return self
        if self.corpus is None:
            if not self.model.base:
                raise ValueError("sft without a corpus tunes model.base: set model.base (models:/name@alias, s3://, a "
                                 "local directory), or a corpus to pretrain on first")  # fmt: skip
            if self.model.lora is not None:
                raise ValueError("model.lora: the SFT stage's adapters are sft.lora; move them there")
            if self.train != TrainConfig():  # (not model_fields_set: the KFP tasks' JSON round trip sets every key)
                raise ValueError("train: configures pretraining, which this config does not run (no corpus); "
                                 "the SFT stage's settings are sft.train")  # fmt: skip
        elif not self.model.base:
            missing = [token for token in CHATML_SPECIAL_TOKENS if token not in self.tokenizer.special_tokens]
            if missing:
                raise ValueError(
                    f"sft after pretraining from scratch renders conversations with the default ChatML template: "
                    f"reserve its markers at tokenizer-training time, tokenizer.special_tokens: "
                    f"{list(CHATML_SPECIAL_TOKENS)} (missing {', '.join(missing)})"
                )
            if self.sft.seq_len > self.model.context_length:
                raise ValueError(f"sft.seq_len ({self.sft.seq_len}) exceeds the model's context length "
                                 f"({self.model.context_length}): lower sft.seq_len or raise the model's")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        # With model.base the context length is the base's: the train step checks it.
        if not self.model.base and self.tokenizer.seq_len > self.model.context_length:
            key = "n_positions" if self.model.architecture == "gpt2" else "max_position_embeddings"
            raise ValueError(
                f"tokenizer.seq_len ({self.tokenizer.seq_len}) exceeds model.{key} "
                f"({self.model.context_length}): raise {key} or lower seq_len"
            )
        if self.cluster.train_nodes > 1 and not (self.cluster.data_pvc or self.data_root.startswith("s3://")):
            raise ValueError(
                f"cluster.train_nodes={self.cluster.train_nodes} needs checkpoints every node can reach: an s3:// "
                "data_root, or cluster.data_pvc (a ReadWriteMany claim) with data_root: /data/..."
            )
        for key, train in (("train", self.train if self.corpus else None), ("sft.train", self.sft.train if self.sft else None)):
            if train is None:
                continue
            if self.cluster.gpus and self.cluster.gpus != train.nproc_per_node:
                raise ValueError(
                    f"{key}.nproc_per_node ({train.nproc_per_node}) must equal cluster.gpus ({self.cluster.gpus}): "
                    "one rank per GPU (on every node)"
                )
            per_step = train.micro_batch_size * train.nproc_per_node * self.cluster.train_nodes
            if train.global_batch_size % per_step:
                raise ValueError(
                    f"{key}.global_batch_size ({train.global_batch_size}) must be a multiple of "
                    f"micro_batch_size x nproc_per_node x cluster.train_nodes ({train.micro_batch_size} x "
                    f"{train.nproc_per_node} x {self.cluster.train_nodes} = {per_step})"
                )
        return self

    def sft_stage(self, base_uri: str) -> "RunConfig":
        """This config as the SFT stage's train step runs it: sft.train as `train`, and the model
        to tune (`base_uri`: model.base, or the pretrained model) with sft.lora as `model`."""
        if self.sft is None:
            raise ValueError("the config has no sft section")
        model = ModelConfig(base=base_uri, lora=self.sft.lora)
        return self.model_copy(update={"train": self.sft.train, "model": model})

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (check the spelling; see pipelines/configs/demo.yaml)")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif not err["loc"]:  # a check across sections: its input is the whole config, not worth repeating
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def parse_config(data: object, source: str = "<config>") -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if overrides:
        data = merge(data or {}, overrides)
    return parse_config(data, str(path))


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, nested mappings merged key by key (a.b from one, a.c from the other)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out
