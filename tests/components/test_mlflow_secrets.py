"""What reaches MLflow: every config key (tokenizer.*, evaluate.max_new_tokens, sft-tokenize.*
included), and no credential — declared (SecretStr), named (aws_secret_access_key, HF_TOKEN) or
shaped (hf_..., a JWT, a URI's password) — in params, tags or artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from pydantic import SecretStr

from components import mlflow_runs
from components.config import Section
from components.sft.template import CHATML_SPECIAL_TOKENS
from pipelines.config import RunConfig, load_config
from pipelines.steps import common

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
PASSWORD = "pl4nted-pw-81c2"
TRACKING_URI = f"http://homegrown:{PASSWORD}@mlflow.example:5000"
# every section of RunConfig set, sft (after pretraining) and every optional cluster setting included
FULL = {
    "mlflow": {"tracking_uri": TRACKING_URI},
    "tokenizer": {"special_tokens": list(CHATML_SPECIAL_TOKENS)},
    "evaluate": {"stride": 64},
    "registry": {"max_bits_per_byte": 3.5, "max_language_regression": 0.1},
    "sft": {"data": "s3://homegrown-data/chat/", "seq_len": 128, "end_of_turn": "<|im_end|>",
            "lora": {"r": 8, "alpha": 16}, "train": {"max_steps": 5}},
    "cluster": {"gpus": 0, "train_cpu": "8", "train_memory": "16Gi", "data_pvc": "homegrown-data", "train_nodes": 2,
                "namespace": "ml", "service_account": "homegrown-steps",
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                "secrets": [{"secret_name": "homegrown-s3",
                             "keys": {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}}]},
}  # fmt: skip


def full_config() -> RunConfig:
    config = load_config(CONFIGS / "demo.yaml", FULL)
    assert config.sft is not None and config.stages == ("pretrain", "sft")
    return config


def logged_params(config: RunConfig) -> dict[str, dict]:
    """What the pipeline logs as params, run by run: the parent (pipelines/steps/start.py) and each
    step (pipelines/steps/<step>.py's common.step_run call)."""
    logged = {
        "parent": config.model_dump(mode="json"),
        "clean": {"clean": {"input": config.corpus, **config.clean.model_dump()}},
        "tokenizer": {"tokenizer": config.tokenizer.model_dump()},
        "train": {"train": {"train": config.train.model_dump(), "model": config.model.model_dump()}},
        "evaluate": {"evaluate": config.evaluate.model_dump()},
        "register": {"register": config.registry.model_dump()},
    }
    if sft := config.sft:
        logged["sft-data"] = {"sft-data": {"input": sft.data, **sft.clean.model_dump()}}
        logged["sft-tokenize"] = {"sft-tokenize": {"base": "runs:/abc/model", "seq_len": sft.seq_len,
                                                   "end_of_turn": sft.end_of_turn}}  # fmt: skip
    return logged


def configs() -> list[tuple[str, RunConfig]]:
    found = [(path.name, load_config(path)) for path in sorted(CONFIGS.glob("*.yaml"))]
    assert {"chat-demo.yaml", "gpu.yaml", "demo.yaml"} <= {name for name, _ in found}
    return [("full", full_config()), *found]


def test_run_config_declares_no_secret():
    assert mlflow_runs.declared_secrets(RunConfig) == set()


@pytest.mark.parametrize("name,config", configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_config_key_reaches_the_params(name, config):
    for run, params in logged_params(config).items():
        flat = mlflow_runs.flatten(params)
        kept = mlflow_runs.safe_params(params)
        assert set(flat) - set(kept) == mlflow_runs.declared_secrets(RunConfig) == set(), f"{name} {run}"
        changed = {k: v for k, v in kept.items() if v != str(flat[k])}
        assert changed == ({"mlflow.tracking_uri": "http://homegrown:***@mlflow.example:5000"}
                           if name == "full" and run == "parent" else {}), f"{name} {run}"  # fmt: skip
    kept = mlflow_runs.safe_params(config.model_dump(mode="json"))
    assert kept["tokenizer.vocab_size"] == str(config.tokenizer.vocab_size)
    assert kept["tokenizer.special_tokens"] == str(config.tokenizer.special_tokens)
    assert kept["evaluate.max_new_tokens"] == str(config.evaluate.max_new_tokens)
    assert kept["cluster.secrets"] == str(config.model_dump(mode="json")["cluster"]["secrets"])


def test_the_issue_keys_by_name():
    params = mlflow_runs.safe_params({"tokenizer": {"vocab_size": 4096, "special_tokens": ["<|im_end|>"]},
                                      "evaluate": {"max_new_tokens": 32}, "sft-tokenize": {"seq_len": 256}})
    assert params == {"tokenizer.vocab_size": "4096", "tokenizer.special_tokens": "['<|im_end|>']",
                      "evaluate.max_new_tokens": "32", "sft-tokenize.seq_len": "256"}  # fmt: skip


CREDENTIAL_NAMES = [
    "s3.secret_key", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN",
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "db.password",
    "token", "api_key", "apiKey", "x.accessToken", "refresh_token", "client_secret", "private_key",
    "azure.connection_string", "credentials", "auth", "Authorization", "bearer", "X-Amz-Security-Token",
]  # fmt: skip
ORDINARY_NAMES = [
    "tokenizer", "tokenizer.vocab_size", "tokenizer.special_tokens", "evaluate.max_new_tokens", "sft-tokenize.seq_len",
    "pad_token", "eos_token", "bos_token_id", "tokens_per_second", "cluster.secrets", "secret_name",
    "model.num_key_value_heads", "key", "kms_key_id", "keys", "author", "passage", "secretary",
]  # fmt: skip


def test_credential_names_by_their_words_not_a_substring():
    assert [n for n in CREDENTIAL_NAMES if not mlflow_runs.credential_name(n)] == []
    assert [n for n in ORDINARY_NAMES if mlflow_runs.credential_name(n)] == []


def test_values_shaped_like_keys_are_masked(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    mask = mlflow_runs.mask_secrets
    assert mask("token hf_PlantedToken5d0c77aa here") == "token *** here"
    assert mask("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJl") == "***"
    assert mask("Authorization: Bearer pl4ntedBearer99") == "Authorization: Bearer ***"
    assert mask("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
                ) == "AWS_ACCESS_KEY_ID=*** AWS_SECRET_ACCESS_KEY=***"
    assert mask("sk-proj-pl4ntedOpenAIkey0123456789") == "***"
    assert mask("ghp_pl4ntedGitHubToken0123456789abcdef") == "***"
    assert mask("dsn postgresql://app:pl4nted-pg@db:5432/x, more") == "dsn postgresql://app:***@db:5432/x, more"
    assert mask("a\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----\nb") == "a\n***\nb"
    ordinary = ["0123456789abcdef0123456789abcdef01234567",  # a git sha: one case
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a sha256
                "s3://homegrown-data/runs/Demo2/data/clean/shard-00001.jsonl.gz", "hf_cache", "models:/homegrown@champion",
                "tokenizer-sk-1", "['<|im_start|>', '<|im_end|>']", "Bearer", "http://mlflow:5000/?max_new_tokens=5"]
    assert [mask(text) for text in ordinary] == ordinary


def test_credential_env_values_are_masked_anywhere(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret-7f3a9c")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "planted-mlflow-password-2b8e41")
    monkeypatch.setenv("HOMEGROWN_PUBLIC_NOTE", "planted-public-value")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "homegrown-user")  # a user name: not a credential
    params = mlflow_runs.safe_params({"note": "key planted-aws-secret-7f3a9c, pw planted-mlflow-password-2b8e41",
                                      "public": "planted-public-value by homegrown-user"})
    assert params == {"note": "key ***, pw ***", "public": "planted-public-value by homegrown-user"}


class _WithSecret(Section):
    dsn: SecretStr
    backup: SecretStr | None = None
    host: str = "db"


class _Outer(Section):
    db: _WithSecret
    seed: int = 0


def test_declared_secrets_are_left_out_in_both_dump_modes():
    assert mlflow_runs.declared_secrets(_Outer) == {"db.dsn", "db.backup"}
    config = _Outer(db=_WithSecret(dsn="pl4nted-dsn-value", backup="pl4nted-backup"))
    for mode in ("python", "json"):
        assert mlflow_runs.safe_params(config.model_dump(mode=mode)) == {"db.host": "db", "seed": "0"}


def test_planted_secrets_reach_no_param_tag_or_artifact(sqlite_uri, tmp_path, monkeypatch):
    env = {"AWS_SECRET_ACCESS_KEY": "planted-aws-secret-7f3a9c", "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-2b8e41",
           "HF_TOKEN": "hf_plantedtoken5d0c77"}  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.c2lnbmF0dXJl"
    planted = [*env.values(), PASSWORD, "pl4nted-named-aws-key", "hf_PlantedToken5d0c77aa", "pl4nted-pg",
               "eyJzdWIiOiJwbGFudGVkIn0", "pl4nted-signature", "pl4ntedBearer99", "pl4nted-dsn-value"]  # fmt: skip
    config = full_config()
    params = config.model_dump(mode="json")
    params["s3"] = {"aws_secret_access_key": "pl4nted-named-aws-key", "region": "eu-west-1"}
    params["notes"] = {"source": "hf_PlantedToken5d0c77aa", "dsn": "postgresql://app:pl4nted-pg@db/x", "jwt": jwt,
                       "env": "key planted-aws-secret-7f3a9c", "odd key@x": "see hf_plantedtoken5d0c77"}  # fmt: skip
    params["declared"] = _WithSecret(dsn="pl4nted-dsn-value").model_dump()
    tags = {"homegrown.corpus": "https://data.example/c.jsonl?X-Amz-Signature=pl4nted-signature&v=1",
            "homegrown.hf_token": "hf_PlantedToken5d0c77aa", "homegrown.auth": "Bearer pl4ntedBearer99",
            "homegrown.note": f"Authorization: Bearer pl4ntedBearer99, {jwt}", "lang@hint": jwt}
    parent = mlflow_runs.start_pipeline_run(sqlite_uri, "exp", "run-1", tags, params)
    target = common.MlflowTarget(sqlite_uri, parent, "exp")
    for run, step_params in logged_params(config).items():
        if run != "parent":
            step = next(iter(step_params))
            with common.step_run(step, target, step_params[step]) as active:
                mlflow_runs.set_tags(MlflowClient(sqlite_uri), active.info.run_id,
                                     {"homegrown.uri": TRACKING_URI, "homegrown.token": jwt})  # fmt: skip

    client = MlflowClient(sqlite_uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    assert len(runs) == 8
    shown = [f"{k}={v}" for r in runs for k, v in {**r.data.params, **r.data.tags}.items()]
    assert [s for s in shown for p in planted if p in s] == []
    parent_run = client.get_run(parent)
    assert parent_run.data.params["mlflow.tracking_uri"] == "http://homegrown:***@mlflow.example:5000"
    assert parent_run.data.params["notes.source"] == "***"
    assert parent_run.data.params["notes.dsn"] == "postgresql://app:***@db/x"
    assert parent_run.data.params["notes.env"] == "key ***"
    assert parent_run.data.params["s3.region"] == "eu-west-1" and "s3.aws_secret_access_key" not in parent_run.data.params
    assert parent_run.data.params["declared.host"] == "db" and "declared.dsn" not in parent_run.data.params
    assert parent_run.data.tags["homegrown.corpus"] == "https://data.example/c.jsonl?X-Amz-Signature=***&v=1"
    assert parent_run.data.tags["homegrown.note"] == "Authorization: Bearer ***, ***"
    assert "homegrown.hf_token" not in parent_run.data.tags and "homegrown.auth" not in parent_run.data.tags
    # the tokenizer and sft-tokenize steps show their settings
    steps = {r.data.tags["homegrown.step"]: r.data.params for r in runs if "homegrown.step" in r.data.tags}
    assert steps["tokenizer"]["tokenizer.vocab_size"] == str(config.tokenizer.vocab_size)
    assert steps["sft-tokenize"] == {"sft-tokenize.base": "runs:/abc/model", "sft-tokenize.seq_len": "128",
                                     "sft-tokenize.end_of_turn": "<|im_end|>"}  # fmt: skip
    assert steps["evaluate"]["evaluate.max_new_tokens"] == str(config.evaluate.max_new_tokens)
    # every byte the store holds: the database and the artifacts (renamed keys' name tables)
    assert mlflow_runs.read_names(client, parent) == {"notes.odd_key_x-" + _sha8("notes.odd key@x"): "notes.odd key@x",
                                                      "lang_hint-" + _sha8("lang@hint"): "lang@hint"}  # fmt: skip
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert tmp_path / "mlflow.db" in files and any(p.name == mlflow_runs.NAMES_ARTIFACT for p in files)
    for path in files:
        data = path.read_bytes()
        assert [p for p in planted if p.encode() in data] == [], path


def _sha8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
