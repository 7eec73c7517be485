"""The whole DAG through kfp's local runner, twice, asserted through the MLflow store.

Run 1 trains a small model and becomes champion. Run 2 is forced worse (one training step):
it is registered as candidate but the gate fails, and `champion` stays on run 1's version.
"""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.config import parse_config
from pipelines.local import PipelineFailed, run_local, summarize

pytestmark = pytest.mark.slow
STEPS = {"clean", "tokenizer", "train", "evaluate", "register"}


def corpus_slice(source: Path, dest: Path, per_shard: int = 250) -> Path:
    dest.mkdir()
    for shard in sorted(source.glob("*.jsonl")):
        lines = shard.read_bytes().split(b"\n")[:per_shard]  # b"\n" only: a U+2028 in a string is no line end
        (dest / shard.name).write_bytes(b"\n".join(lines) + b"\n")
    return dest


def small_config(corpus: Path, data_root: Path, max_steps: int):
    return parse_config({
        "name": "e2e",
        "corpus": str(corpus),
        "data_root": str(data_root),
        "mlflow": {"experiment": "e2e"},
        "tokenizer": {"vocab_size": 600, "seq_len": 64, "eval_fraction": 0.1, "eval_max_documents": 40},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64},
        "train": {"max_steps": max_steps, "micro_batch_size": 4, "global_batch_size": 8, "warmup_steps": 2,
                  "learning_rate": 0.01, "log_every": 5},
        "evaluate": {"prompts": ["The", "人人"], "max_new_tokens": 8},
        "registry": {"model_name": "e2e-model"},
    })  # fmt: skip


PLANTED = {
    "AWS_SECRET_ACCESS_KEY": "planted-aws-secret-7f3a9c",
    "MLFLOW_TRACKING_PASSWORD": "planted-mlflow-password-2b8e41",
    "HF_TOKEN": "hf_plantedtoken5d0c77",
}


def nested_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> dict:
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {run.data.tags["homegrown.step"]: run for run in children}


def test_two_runs_gate_keeps_the_better_champion(demo_corpus, tmp_path, sqlite_uri, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    for name, value in PLANTED.items():  # secrets a step could see; none may surface anywhere
        monkeypatch.setenv(name, value)
    corpus = corpus_slice(demo_corpus, tmp_path / "corpus")
    client = MlflowClient(sqlite_uri)

    first = run_local(small_config(corpus, tmp_path / "data", 60), "e2e-first", sqlite_uri,
                      work_dir=tmp_path / "runs")
    assert first.status == "FINISHED"
    assert first.tags["homegrown.gate"] == "passed"
    steps = nested_runs(client, first.experiment_id, first.parent_run_id)
    assert set(steps) == STEPS
    assert steps["clean"].data.metrics["kept"] > 500
    assert steps["clean"].data.metrics["records_in"] == 1000
    losses = [m.value for m in client.get_metric_history(steps["train"].info.run_id, "train/loss")]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert steps["evaluate"].data.metrics["bits_per_byte"] > 0
    for key in ("clean.documents_kept", "train.final_loss", "eval.bits_per_byte", "gate.passed"):
        assert key in first.metrics, key

    champion = client.get_model_version_by_alias("e2e-model", "champion")
    candidate = client.get_model_version_by_alias("e2e-model", "candidate")
    assert str(champion.version) == str(candidate.version) == first.tags["homegrown.model_version"]
    assert champion.tags["validation_status"] == "passed"
    for tag in ("digest.data", "digest.tokenizer", "digest.config", "digest.eval", "code_version",
                "digest.model", "run.pipeline", "run.clean", "run.train", "run.evaluate"):
        assert champion.tags[tag], tag
    assert champion.tags["run.train"] == champion.run_id == steps["train"].info.run_id  # trained by, not registered by
    assert "cleaning_stats" not in champion.tags
    assert champion.description.startswith(f"# e2e-model, version {champion.version}")
    assert "## Evaluation" in champion.description and "## Promotion gate" in champion.description
    datasets = {d.dataset.name: d for d in client.get_run(first.parent_run_id).inputs.dataset_inputs}
    assert set(datasets) == {"cleaned-corpus", "eval-set"}
    assert datasets["eval-set"].dataset.digest == champion.tags["digest.eval"][:36]
    clean_run = steps["clean"].info
    assert clean_run.end_time - clean_run.start_time >= steps["clean"].data.metrics["seconds"] * 1000 - 1
    assert steps["clean"].data.metrics["docs_per_s"] > 0 and steps["clean"].data.metrics["bytes_per_s"] > 0

    second = run_local(small_config(corpus, tmp_path / "data", 1), "e2e-second", sqlite_uri,
                       work_dir=tmp_path / "runs")
    assert second.status == "FINISHED"
    assert second.tags["homegrown.gate"] == "failed"
    # the compare view of the two parents lines them up; the second also has its delta to the champion
    assert set(second.metrics) - set(first.metrics) == {"eval.bits_per_byte_delta"}
    assert set(first.metrics) <= set(second.metrics)
    assert "homegrown.champion_version" not in second.tags, "promote must not run when the gate fails"
    evaluate = nested_runs(client, second.experiment_id, second.parent_run_id)["evaluate"]
    assert evaluate.data.metrics["champion_bits_per_byte"] < evaluate.data.metrics["bits_per_byte"]
    # the champion was not scored again: run 1's own scores on the same frozen set, kept on its version
    assert evaluate.data.metrics["champion_bits_per_byte"] == steps["evaluate"].data.metrics["bits_per_byte"]
    assert any(key.startswith("eval_cache.") for key in champion.tags)
    second_results = [json.loads(p.read_text()) for p in (tmp_path / "data").glob("*/evaluate/results.json")]
    assert [r["champion"]["cached"] for r in second_results if "champion" in r] == [True]

    assert client.get_model_version_by_alias("e2e-model", "champion").version == champion.version
    new_candidate = client.get_model_version_by_alias("e2e-model", "candidate")
    assert new_candidate.version != champion.version
    assert new_candidate.tags["validation_status"] == "failed"

    pages = [p.read_text() for p in (tmp_path / "runs" / "kfp").glob("homegrown-*/evaluate-op/plots")]
    assert len(pages) == 2 and all(page.count("<svg") == 2 for page in pages)
    logged = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert {"report.html", "loss_curve.png", "bits_per_byte_by_language.png"} <= logged
    reports = [p.read_text() for p in (tmp_path / "runs" / "kfp").glob("homegrown-*/evaluate-op/report")]
    assert all("bits per byte" in r for r in reports)
    assert any(f"models:/e2e-model@champion (version {champion.version})" in r for r in reports)
    executor = json.loads(next((tmp_path / "runs" / "kfp").glob("homegrown-*/clean-collect-op/executor_output.json")).read_text())
    kfp_metrics = executor["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert kfp_metrics["records_in"] == 1000 and kfp_metrics["kept"] == steps["clean"].data.metrics["kept"]
    gate = next((tmp_path / "runs" / "kfp").glob("homegrown-*/register-op/gate")).read_text()
    assert "| check | champion | challenger | threshold | result |" in gate

    # Every byte two runs left behind: MLflow's database and artifacts, KFP's executor inputs and
    # outputs, logs, data. Not one planted secret.
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 100 and (tmp_path / "mlflow.db") in files
    for path in files:
        data = path.read_bytes()
        for name, value in PLANTED.items():
            assert value.encode() not in data, f"{name} leaked into {path}"


def test_corpus_of_invalid_records_fails_the_run_clearly(tmp_path, sqlite_uri, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "bad.jsonl").write_bytes(b'{"body": "no text field"}\n\xff\xfe\n{broken\n')
    with pytest.raises(PipelineFailed) as failed:
        run_local(small_config(corpus, tmp_path / "data", 1), "e2e-bad", sqlite_uri, work_dir=tmp_path / "runs")
    message = str(failed.value)
    assert "clean-collect-op" in message and "CleanError" in message and str(corpus) in message
    summary = summarize(sqlite_uri, "e2e", "e2e-bad")
    assert summary.status == "FAILED", "the exit handler closes the parent run as failed"
    stats = json.loads(next((tmp_path / "data").glob("e2e-bad/clean/stats.json")).read_text())
    assert stats["records_in"] == 3 and stats["kept"] == 0 and sum(stats["quarantined"].values()) == 3
