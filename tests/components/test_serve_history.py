"""A model's life after the gate, as model-version tags in a real (SQLite) MLflow registry: the
previous champion and rolling back to it, the serving copy (flattened, written once, reused), the
`deployed` tag."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from components import mlflow_runs, storage
from components.register import history
from components.register.history import HistoryError


def flavor_dir(root: Path, version: int) -> Path:
    """What mlflow.transformers logs: MLmodel, the model under model/, the tokenizer under
    components/tokenizer/ (a stand-in: the files the serving copy must carry, tagged by version)."""
    src = root / f"flavor-{version}"
    (src / "model").mkdir(parents=True)
    (src / "components" / "tokenizer").mkdir(parents=True)
    (src / "MLmodel").write_text("flavors:\n  transformers: {}\n")
    (src / "model" / "config.json").write_text(json.dumps({"model_type": "gpt2", "homegrown_version": version}))
    (src / "model" / "generation_config.json").write_text(json.dumps({"max_new_tokens": 8}))
    (src / "model" / "model.safetensors").write_bytes(b"weights-%d" % version)
    (src / "components" / "tokenizer" / "tokenizer.json").write_text("{}")
    (src / "components" / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{x}}"}))
    return src


def register_versions(tracking_uri: str, tmp_path: Path, name: str, count: int) -> list[str]:
    """`count` versions of `name`, each a logged transformers-flavor directory; their numbers."""
    import mlflow
    from mlflow.tracking import MlflowClient

    experiment = mlflow_runs.ensure_experiment(tracking_uri, "t")  # artifacts beside the database
    client = MlflowClient()
    client.create_registered_model(name)
    versions = []
    for i in range(1, count + 1):
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_artifacts(str(flavor_dir(tmp_path, i)), "model")
        versions.append(str(client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version))
    return versions


@pytest.fixture
def registry(sqlite_uri: str, tmp_path: Path):
    from mlflow.tracking import MlflowClient

    register_versions(sqlite_uri, tmp_path, "lm", 3)
    return MlflowClient()


def test_previous_champion_and_rolling_back_one_step_at_a_time(registry):
    with pytest.raises(HistoryError, match="'lm' has no champion: nothing to roll back"):
        history.rollback("lm")
    registry.set_registered_model_alias("lm", "champion", "1")
    with pytest.raises(HistoryError, match=r"champion of 'lm' \(version 1\) records no previous champion"):
        history.rollback("lm")
    for new, old in (("2", "1"), ("3", "2")):  # what the promote step does
        history.record_previous("lm", new, old)
        registry.set_registered_model_alias("lm", "champion", new)
    history.record_previous("lm", "3", "3")  # promoting the champion again records nothing
    assert registry.get_model_version("lm", "3").tags[history.PREVIOUS_TAG] == "2"
    assert history.previous_champion("lm") == ("3", "2")

    assert history.rollback("lm") == history.Rollback("lm", "3", "2")
    assert str(registry.get_model_version_by_alias("lm", "champion").version) == "2"
    assert history.rollback("lm") == history.Rollback("lm", "2", "1")  # one further back
    assert str(registry.get_model_version_by_alias("lm", "champion").version) == "1"

    history.record_previous("lm", "1", "3")
    registry.delete_model_version("lm", "3")
    with pytest.raises(HistoryError, match="version 3, is gone from the registry"):
        history.rollback("lm")
    assert str(registry.get_model_version_by_alias("lm", "champion").version) == "1"  # unchanged


def test_the_serving_copy_is_flat_written_once_and_rewritten_when_its_files_are_gone(registry, tmp_path):
    root = str(tmp_path / "data")
    lines: list[str] = []
    uri = history.serving_copy("lm", "2", root, lines.append)
    assert uri == str(tmp_path / "data" / "serving" / "lm" / "v2")
    assert sorted(p.name for p in Path(uri).iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((Path(uri) / "config.json").read_text())["homegrown_version"] == 2
    assert json.loads((Path(uri) / "tokenizer_config.json").read_text())["chat_template"] == "{{x}}"
    assert registry.get_model_version("lm", "2").tags[history.SERVING_TAG] == uri
    assert history.has_files(uri)

    (Path(uri) / "model.safetensors").write_bytes(b"marker")  # a reuse does not download again
    assert history.serving_copy("lm", "2", str(tmp_path / "elsewhere"), lines.append) == uri
    assert (Path(uri) / "model.safetensors").read_bytes() == b"marker"
    assert lines == [f"[serve] version 2 of lm: serving copy written to {uri}",
                     f"[serve] version 2 of lm: serving copy {uri} (reused)"]  # fmt: skip

    storage.remove_tree(uri)  # the bucket was cleaned: the tag alone is not trusted
    again = history.serving_copy("lm", "2", root, lines.append)
    assert again == uri and (Path(uri) / "model.safetensors").read_bytes() == b"weights-2"


def test_the_serving_copy_on_s3(registry, bucket):
    uri = history.serving_copy("lm", "1", f"s3://{bucket}/runs", lambda _: None)
    assert uri == f"s3://{bucket}/runs/serving/lm/v1"
    assert [f.rsplit("/", 1)[1] for f in storage.list_files(uri)] == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert storage.read_bytes(storage.join(uri, "model.safetensors")) == b"weights-1"
    assert history.has_files(uri) and not history.has_files(f"s3://{bucket}/runs/serving/lm/v2")


def test_deployed_tag(registry):
    when = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    value = history.mark_deployed("lm", "2", "ml/lm", "http://lm.ml.example.com", when)
    assert value == "2026-03-01T12:30:00Z ml/lm http://lm.ml.example.com"
    assert registry.get_model_version("lm", "2").tags[history.DEPLOYED_TAG] == value
