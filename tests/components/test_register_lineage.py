"""Lineage a person can follow in the MLflow UI, against a real (SQLite) store: the registered
version's source run is the run that trained it, the logged model carries the registered model's
name, the version's description links every step's run, large JSON lives in artifacts, tag names
are short, and step params have no doubled prefix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from test_register import results_json, tiny_model_dir  # noqa: F401 -- the fixture

from components import mlflow_runs
from components.register import registry
from pipelines.config import load_config
from pipelines.steps import common, register, start, train

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


def test_train_params_are_prefixed_once(sqlite_uri):
    for stage, step in (("demo.yaml", "train"), ("chat-demo.yaml", "sft-train")):
        config = load_config(CONFIGS / stage)
        with common.step_run(step, common.MlflowTarget(sqlite_uri, None, "p"), train.step_params(config)) as active:
            run_id = active.info.run_id
        params = MlflowClient(sqlite_uri).get_run(run_id).data.params
        assert params[f"{step}.zero_stage"] == str(config.train.zero_stage)
        assert params[f"{step}.model.base"] == str(config.model.base)
        assert [k for k in params if not k.startswith(f"{step}.") or ".train." in k] == []


def test_a_version_registered_before_the_short_digest_name_is_still_found(sqlite_uri, tmp_path):
    mlflow_runs.configure(sqlite_uri)
    client = MlflowClient(sqlite_uri)
    client.create_registered_model("old")
    client.create_model_version("old", str(tmp_path), tags={registry.LEGACY_DIGEST_TAG: "a" * 64})
    client.create_model_version("old", str(tmp_path), tags={registry.DIGEST_TAG: "b" * 64})
    assert str(registry.version_with_digest("old", "a" * 64).version) == "1"
    assert str(registry.version_with_digest("old", "b" * 64).version) == "2"
    assert registry.version_with_digest("old", "c" * 64) is None
    assert registry.logged_model_name('org/tiny.lm:v1%"x\'') == "org-tiny-lm-v1--x-"


@pytest.mark.slow
def test_the_version_links_to_the_run_that_trained_it(
    tiny_model_dir: Path, sqlite_uri: str, tmp_path: Path  # noqa: F811
):
    config = load_config(CONFIGS / "demo.yaml", {"registry": {"model_name": "tiny.lm"},
                                                 "mlflow": {"experiment": "lineage"}})  # fmt: skip
    client = MlflowClient(sqlite_uri)
    parent = start.run(config, "lineage-1", common.MlflowTarget(sqlite_uri, None, "lineage"))
    target = common.MlflowTarget(sqlite_uri, parent, "lineage")
    runs = {}
    for step in ("clean", "tokenizer", "train", "evaluate"):
        with common.step_run(step, target, {"seed": 1}) as active:
            runs[step] = active.info.run_id
    stats = {"records_in": 100, "kept": 60, "counters": {f"kept_lang_{i:03d}": i for i in range(300)}}
    lineage = {"digest.data": "d" * 64, "cleaning_stats": json.dumps(stats, sort_keys=True),
               "digest.tokenizer": "t" * 64, "digest.packed": "p" * 64, "digest.config": config.digest,
               "code_version": "0.2.0", "pipeline_run_name": "lineage-1"}  # fmt: skip

    outcome = register.run(config, str(tiny_model_dir), results_json(tmp_path / "r.json", 4.0), lineage, target).value

    version = client.get_model_version("tiny.lm", outcome.version)
    assert version.run_id == runs["train"]  # the source run: the training, not the register step
    assert version.source.startswith("models:/m-")  # the SQL store keeps no model_id column: read it off the source
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    assert (logged.name, logged.source_run_id) == ("tiny-lm", runs["train"])
    import mlflow  # and runs:/<the training run>/<logged model name> finds it

    fetched = Path(mlflow.artifacts.download_artifacts(f"runs:/{runs['train']}/tiny-lm", dst_path=str(tmp_path / "dl")))
    assert (fetched / "MLmodel").is_file()
    experiment = client.get_experiment_by_name("lineage").experiment_id
    register_run = client.search_runs([experiment], "tags.`homegrown.step` = 'register'")[0].info.run_id
    runs["register"] = register_run
    for step, run_id in {**runs, "pipeline": parent}.items():
        assert version.tags[f"run.{step}"] == run_id
        link = f"[{run_id}](#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning)"
        assert f"- run.{step}: {link}" in version.description
    # large JSON in the register run's artifacts, not in a tag; the tag names are short
    assert "cleaning_stats" not in version.tags
    saved = client.download_artifacts(register_run, "lineage/cleaning_stats.json", str(tmp_path))
    assert json.loads(Path(saved).read_text()) == stats
    assert "300 documents in" not in version.description and "100 documents in, 60 kept" in version.description
    assert version.tags["digest.data"] == "d" * 64 and version.tags["digest.eval"] == "e" * 64
    assert len(version.tags[registry.DIGEST_TAG]) == 64
    assert [k for k in version.tags if len(k) > 20 and not k.startswith("eval_cache.")] == []
    # the model config params MLflow logs with the model go to the logged model's run, unprefixed
    # ones nowhere near the register step's own
    assert set(client.get_run(register_run).data.params) == {f"register.{k}" for k in config.registry.model_dump()}
