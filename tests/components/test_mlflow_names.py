"""Names from data or config (languages, sources, reasons, config keys) as MLflow and KFP keys:
valid, deterministic, collision-free, the originals kept in the run's mlflow_names.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_metric_name, _validate_param_name, _validate_tag_name

from components import shards, mlflow_runs
from components.manifest import Manifest, shard_info
from components.shards import Document

LONG = "lang_" + "x" * 295  # 300 characters
# original -> the exact key: valid names stay as they are, others get "-" + sha256[:8] of the original
HOSTILE = {
    "bits_per_byte_sr@latin": "bits_per_byte_sr_latin-90e88714",
    "bits_per_byte_sr#latin": "bits_per_byte_sr_latin-de9c61cc",  # sanitises like sr@latin, keyed apart
    "bits_per_byte_zh-Hant": "bits_per_byte_zh-Hant",
    "bits_per_byte_sr latin": "bits_per_byte_sr_latin-d457e80c",
    "bits_per_byte_中文": "bits_per_byte___-339764f7",
    "bits_per_byte_source_../../etc/passwd": "bits_per_byte_source_.._.._etc_passwd-25371cbb",
    "bits_per_byte_source_udhr/../web": "bits_per_byte_source_udhr_.._web-f6b7b795",
    "bits_per_byte_source_chatterbot/english.yml": "bits_per_byte_source_chatterbot/english.yml",
    LONG: LONG[:241] + "-86159de5",
}


def test_hostile_names_become_exact_valid_keys():
    keys = mlflow_runs.mlflow_keys(HOSTILE)
    assert keys == HOSTILE
    assert len(set(keys.values())) == len(keys), "two originals never share a key"
    assert len(keys[LONG]) == mlflow_runs.KEY_MAX
    for name, key in keys.items():  # the suffix is the original's sha256, so the same name always gets it
        assert key == name or key.endswith("-" + hashlib.sha256(name.encode()).hexdigest()[:8])
    for key in keys.values():  # MLflow's own checks, as the server runs them
        _validate_metric_name(key)
        _validate_param_name(key)
        _validate_tag_name(key)
    for odd in ("", ".", "..", "/abs", "a/", "a//b", "x:y"):
        key = mlflow_runs.mlflow_key(odd)
        _validate_metric_name(key)
        assert key != odd and key == mlflow_runs.mlflow_key(odd)


def test_names_from_data_log_into_a_real_store_with_the_originals_beside(sqlite_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRUNCATE_LONG_VALUES", "false")  # too long values must be ours to cut, not MLflow's
    parent = mlflow_runs.start_pipeline_run(
        sqlite_uri, "exp", "run-1", {"homegrown.corpus": "c" * 9000, "lang@hint": "sr@latin"},
        {"clean": {"min_chars_by_lang": {"sr@latin": 20, "zh-Hant": 5}}, "note": "n" * 7000},
    )
    client = MlflowClient(sqlite_uri)
    with mlflow_runs.step_run("evaluate", sqlite_uri, parent, "exp") as run:
        metrics = {name: float(i) for i, name in enumerate(HOSTILE)}
        mlflow_runs.log_metrics(client, run.info.run_id, metrics)
        mlflow_runs.log_metrics(client, parent, {f"eval.{name}": 1.0 for name in ("bits_per_byte", "bits_per_byte_sr@latin")})
        mlflow_runs.set_tags(client, parent, {"homegrown.gate": "passed", "gate.reason[sr@latin]": "ok"})

    step = client.get_run(run.info.run_id).data
    assert step.metrics == {HOSTILE[name]: value for name, value in metrics.items()}
    renamed = {key: name for name, key in HOSTILE.items() if key != name}
    assert mlflow_runs.read_names(client, run.info.run_id) == renamed

    top = client.get_run(parent).data
    assert top.params == {"clean.min_chars_by_lang.sr_latin-2114632f": "20", "clean.min_chars_by_lang.zh-Hant": "5",
                          "note": "n" * 5974 + "... [cut: 7000 characters]"}  # fmt: skip
    assert len(top.params["note"]) == mlflow_runs.PARAM_VALUE_MAX
    assert top.metrics == {"eval.bits_per_byte": 1.0, "eval.bits_per_byte_sr_latin-5f918c72": 1.0}
    assert top.tags["lang_hint-0500f52f"] == "sr@latin" and top.tags["homegrown.gate"] == "passed"
    assert len(top.tags["homegrown.corpus"]) == mlflow_runs.TAG_VALUE_MAX
    assert mlflow_runs.read_names(client, parent) == {
        "lang_hint-0500f52f": "lang@hint",
        "clean.min_chars_by_lang.sr_latin-2114632f": "clean.min_chars_by_lang.sr@latin",
        "eval.bits_per_byte_sr_latin-5f918c72": "eval.bits_per_byte_sr@latin",
        "gate.reason_sr_latin_-ae6ba6ed": "gate.reason[sr@latin]",
    }

    # another process (a later KFP step) adds to the table; rows already there are not repeated
    mlflow_runs._recorded.clear()
    mlflow_runs.log_metrics(client, parent, {"eval.bits_per_byte_sr@latin": 2.0, "eval.bits_per_byte_中文": 3.0})
    table = json.loads(Path(client.download_artifacts(parent, mlflow_runs.NAMES_ARTIFACT)).read_text())
    assert table["columns"] == ["mlflow_key", "original"]
    assert [row[1] for row in table["data"]].count("eval.bits_per_byte_sr@latin") == 1
    assert mlflow_runs.read_names(client, parent)["eval.bits_per_byte___-6d5d1df2"] == "eval.bits_per_byte_中文"


def test_kfp_metrics_use_the_mlflow_keys():
    from kfp.dsl import Metrics

    from pipelines.steps.common import StepResult, publish

    artifact = Metrics(name="metrics", uri="", metadata={})
    publish(StepResult(None, "clean: test", {"kept_lang_sr@latin": 3, "kept": 5, LONG: 1}), artifact)
    assert artifact.metadata == {"kept_lang_sr_latin-88de67d8": 3.0, "kept": 5.0, HOSTILE[LONG]: 1.0}


def test_evaluate_command_with_hostile_languages_and_sources(tmp_path, sqlite_uri):
    """The reported crash: `homegrown evaluate --tracking-uri` on records with lang_hint sr@latin."""
    from components.tokenizer.train_bpe import train_bpe
    from pipelines.cli import main
    from tests.components.test_evaluate import save_model

    texts = [("sr@latin", "Sva ljudska bića rađaju se slobodna i jednaka. " * 2, "../udhr/srp.txt"),
             ("zh-Hant", "人人生而自由，在尊嚴和權利上一律平等。", "web"),
             ("$\\frac$", "Everyone has the right to life, liberty and security.", "a b/c")]  # fmt: skip
    tokenizer = train_bpe([t for _, t, _ in texts] * 5, vocab_size=300, min_frequency=2, min_vocab_fill=0.0)
    model = save_model(tmp_path / "model", tokenizer)
    docs = [Document(id=f"d{i}", text=t, meta={"lang_hint": lang, "source": src}) for i, (lang, t, src) in enumerate(texts)]
    uri = str(tmp_path / "eval" / "part-00000.jsonl.gz")
    manifest_uri = str(tmp_path / "eval" / "manifest.json")
    Manifest(kind="documents", root=str(tmp_path / "eval"), shards=[shard_info(uri, shards.write_documents(uri, docs))],
             facts={"role": "held-out-eval"}).save(manifest_uri)  # fmt: skip

    code = main(["evaluate", "--model", model, "--data", manifest_uri, "--output", str(tmp_path / "out"),
                 "--tracking-uri", sqlite_uri, "--set", "evaluate.max_new_tokens=4", "--set", "evaluate.prompts=[The]"])
    assert code == 0
    client = MlflowClient(sqlite_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("homegrown").experiment_id])
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    originals = {k for k in results["metrics_flat"]}
    assert {"bits_per_byte_sr@latin", "bits_per_byte_source_../udhr/srp.txt", "bits_per_byte_source_a b/c"} <= originals
    names = mlflow_runs.read_names(client, run.info.run_id)
    assert set(run.data.metrics) == {mlflow_runs.mlflow_key(k) for k in originals}
    assert names == {mlflow_runs.mlflow_key(k): k for k in originals if mlflow_runs.mlflow_key(k) != k}
    assert names["bits_per_byte_sr_latin-90e88714"] == "bits_per_byte_sr@latin"
    assert run.data.metrics["bits_per_byte_sr_latin-90e88714"] == results["per_language"]["sr@latin"]["bits_per_byte"]
    assert "bits_per_byte_by_language.png" in {f.path for f in client.list_artifacts(run.info.run_id)}
    assert mlflow.active_run() is None


@pytest.mark.parametrize("name", ["a/b", "x:y", "it's", " ", ".", "..", "..a"])
def test_unusable_registered_model_names_are_config_errors(name):
    from pydantic import ValidationError

    from components.register.config import RegisterConfig

    with pytest.raises(ValidationError, match="registry.model_name .* is not a valid MLflow registered model name"):
        RegisterConfig(model_name=name)
    assert RegisterConfig(model_name="homegrown-demo.v2_zh").model_name == "homegrown-demo.v2_zh"
