"""What a data scientist sees in MLflow, against a real (SQLite) store: the parent run holds every
config key and the pipeline's headline under the same short names from run to run (so the compare
view of two pipeline runs lines them up), the printed link opens the model-training view, and the
clean step's run lasts as long as the cleaning did."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from components import mlflow_runs
from pipelines.config import load_config
from pipelines.steps import clean, common, finish, start

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


def _ui_bundle() -> str:
    import mlflow

    (main,) = (Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js")
    return main.read_text(encoding="utf-8")


def test_the_link_opens_the_model_training_view_of_the_run(sqlite_uri):
    assert mlflow_runs.run_link("3", "abc", "http://127.0.0.1:5000/") == \
        "http://127.0.0.1:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    assert mlflow_runs.run_link("3", "abc") == "#/experiments/3/runs/abc?workflowType=machine_learning"
    # the installed UI reads the view from that query parameter (else the browser's last choice,
    # GenAI first), and its run page is that route: an MLflow upgrade that changes either fails here
    ui = _ui_bundle()
    assert 'e.GENAI="genai",e.MACHINE_LEARNING="machine_learning"' in ui
    assert re.search(r'\.get\("workflowType"\);return \w+===\w+\.GENAI\|\|\w+===\w+\.MACHINE_LEARNING', ui)
    assert "getRunPageRoute(e,t){return`/experiments/${e}/runs/${t}`}" in ui
    # and the experiment is a model-training one for releases that decide by its tag
    client = MlflowClient(sqlite_uri)
    made = mlflow_runs.ensure_experiment(sqlite_uri, "fresh")
    assert client.get_experiment(made).tags["mlflow.experimentKind"] == "custom_model_development"
    older = client.create_experiment("older")  # made before 0.2: tagged when next used
    chosen = client.create_experiment("chosen", tags={"mlflow.experimentKind": "genai_development"})
    assert mlflow_runs.ensure_experiment(sqlite_uri, "older") == older
    assert mlflow_runs.ensure_experiment(sqlite_uri, "chosen") == chosen
    assert client.get_experiment(older).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(chosen).tags["mlflow.experimentKind"] == "genai_development"


def test_every_config_key_reaches_the_parent_run_params_but_declared_secrets(sqlite_uri):
    from test_mlflow_secrets import TRACKING_URI, full_config

    for config in (full_config(), load_config(CONFIGS / "chat-demo.yaml"), load_config(CONFIGS / "gpu.yaml")):
        target = common.MlflowTarget(sqlite_uri, None, "params")
        parent = start.run(config, f"{config.name}-1", target)
        params = MlflowClient(sqlite_uri).get_run(parent).data.params
        expected = {k: str(v) for k, v in mlflow_runs.flatten(config.model_dump(mode="json")).items()}
        assert mlflow_runs.declared_secrets(type(config)) == set()  # none declared: every key is there
        if expected.get("mlflow.tracking_uri") == TRACKING_URI:
            expected["mlflow.tracking_uri"] = "http://homegrown:***@mlflow.example:5000"
        assert params == expected, config.name
        assert "tokenizer.vocab_size" in params and "evaluate.max_new_tokens" in params


def _step(target: common.MlflowTarget, step: str, metrics: dict[str, float]) -> str:
    with common.step_run(step, target, {}) as active:
        mlflow_runs.log_metrics(MlflowClient(target.uri), active.info.run_id, metrics)
        return active.info.run_id


def test_finish_completes_the_parent_headline_under_stable_names(sqlite_uri):
    """Two pipeline runs whose steps logged their metrics but not (all) their headline: the finish
    step puts the same names on both parents, from each step's latest run, data-derived names kept
    readable; a run that failed after cleaning shows what it did. Nothing else reaches the parent."""
    config = load_config(CONFIGS / "demo.yaml", {"mlflow": {"experiment": "compare"}})
    client = MlflowClient(sqlite_uri)
    parents = {}
    for name, loss, bpb in (("demo-a", 4.25, 3.5), ("demo-b", 3.75, 3.25)):
        parent = start.run(config, name, common.MlflowTarget(sqlite_uri, None, "compare"))
        target = common.MlflowTarget(sqlite_uri, parent, "compare")
        _step(target, "clean", {"records_in": 99.0, "kept": 1.0})  # a first attempt, rerun:
        time.sleep(0.01)
        _step(target, "clean", {"records_in": 120.0, "kept": 80.0, "dropped_too_short": 40.0, "docs_per_s": 9.5})
        _step(target, "tokenizer", {"vocab_size": 512.0, "train_tokens": 4096.0, "eval_documents": 8.0})
        _step(target, "train", {"final_loss": loss, "tokens": 2048.0, "tokens_per_s": 300.0})
        _step(target, "evaluate", {"bits_per_byte": bpb, "bits_per_byte_en": bpb - 0.25,
                                   "bits_per_byte_zh Hant": bpb + 1, "perplexity": 20.0, "loss": 3.0,
                                   "tokens_per_char_en": 0.3})  # fmt: skip
        _step(target, "register", {"gate_passed": 1.0, "challenger_bits_per_byte": bpb})
        client.log_metric(target.parent_run_id, "train.final_loss", loss)  # the train step's own, already there
        finish.finish(config.model_dump_json(), name, "", sqlite_uri, "SUCCEEDED")
        parents[name] = client.get_run(target.parent_run_id)

    zh = "eval.bits_per_byte_zh_Hant-" + _sha8("eval.bits_per_byte_zh Hant")
    assert parents["demo-a"].data.metrics == {
        "clean.documents_in": 120.0, "clean.documents_kept": 80.0, "tokenizer.vocab_size": 512.0,
        "tokenizer.train_tokens": 4096.0, "train.final_loss": 4.25, "train.tokens": 2048.0, "eval.loss": 3.0,
        "eval.perplexity": 20.0, "eval.bits_per_byte": 3.5, "eval.bits_per_byte_en": 3.25, zh: 4.5, "gate.passed": 1.0,
    }  # fmt: skip
    assert set(parents["demo-b"].data.metrics) == set(parents["demo-a"].data.metrics)
    assert parents["demo-b"].data.metrics["train.final_loss"] == 3.75
    assert [m.value for m in client.get_metric_history(parents["demo-a"].info.run_id, "train.final_loss")] == [4.25]
    assert mlflow_runs.read_names(client, parents["demo-a"].info.run_id) == {zh: "eval.bits_per_byte_zh Hant"}
    assert {p.info.status for p in parents.values()} == {"FINISHED"}

    parent = start.run(config, "demo-c", common.MlflowTarget(sqlite_uri, None, "compare"))
    target = common.MlflowTarget(sqlite_uri, parent, "compare")
    _step(target, "clean", {"records_in": 10.0, "kept": 0.0})
    finish.finish(config.model_dump_json(), "demo-c", "", sqlite_uri, "FAILED")
    failed = client.get_run(target.parent_run_id)
    assert failed.data.metrics == {"clean.documents_in": 10.0, "clean.documents_kept": 0.0}
    assert failed.info.status == "FAILED"


def test_headline_names_live_in_one_table():
    assert common.headline("evaluate", {"bits_per_byte": 2.0, "bits_per_byte_sw": 1.5, "bits_per_byte_": 9.0,
                                         "tokens": 5.0}) == {"eval.bits_per_byte": 2.0, "eval.bits_per_byte_sw": 1.5}
    assert common.headline("sft-train", {"final_loss": 1.0, "tokens": 64, "steps": 3}) == {
        "sft-train.final_loss": 1.0, "sft-train.tokens": 64.0}
    assert common.headline("nope", {"final_loss": 1.0}) == {}
    nan = common.headline("train", {"final_loss": math.nan})["train.final_loss"]
    assert math.isnan(nan)


CORPUS = [
    "The river carried the small boat past the old mill, where children waved from the wooden bridge.",
    "Bread rises best in a warm kitchen; the baker covers the dough with a cloth and waits an hour.",
    "A library card opens every shelf in the city, from atlases to novels and the newspapers of the week.",
    "The train to the coast leaves at nine, and the station fills with travellers carrying heavy bags.",
]


def test_the_clean_runs_duration_is_the_cleanings(sqlite_uri, tmp_path):
    """The phases run as separate tasks; only collect opens the MLflow run. The run starts when the
    plan did and ends after collect, and it shows documents and bytes per second over that time."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in CORPUS))
    config = load_config(CONFIGS / "demo.yaml", {"corpus": str(corpus), "mlflow": {"experiment": "clean"}})
    config_json, root = config.model_dump_json(), str(tmp_path / "run")
    parent = start.run(config, "clean-1", common.MlflowTarget(sqlite_uri, None, "clean"))
    before = time.time()
    shards = clean.plan(config_json, root)
    partitions, groups = clean.dedup_items(config_json, root, "exact"), clean.dedup_items(config_json, root, "near")
    assert [(s["index"], s["bytes"]) for s in shards] == [(0, corpus.stat().st_size)]
    assert before <= shards[0]["planned_at"] <= time.time()
    for shard in shards:
        clean.filter_shard(config_json, shard)
    for partition in partitions:
        clean.exact_partition(config_json, partition)
    for group in groups:
        clean.band_group(config_json, group)
    clean.cluster(config_json, root)
    for shard in shards:
        clean.write_shard(config_json, shard)
    time.sleep(1.0)  # the phases took at least this long
    documents = SimpleNamespace(path=str(tmp_path / "documents.json"), metadata={})
    kfp_metrics = SimpleNamespace(logged={}, log_metric=lambda k, v: kfp_metrics.logged.__setitem__(k, v))
    clean.collect(config_json, root, sqlite_uri, parent, shards, documents, kfp_metrics)
    after = time.time()

    client = MlflowClient(sqlite_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("clean").experiment_id],
                                f"tags.mlflow.parentRunId = '{parent}'")  # fmt: skip
    assert run.info.start_time == int(shards[0]["planned_at"] * 1000)
    assert 1000 <= run.info.end_time - run.info.start_time <= (after - shards[0]["planned_at"]) * 1000 + 1
    m = run.data.metrics
    assert 1.0 <= m["seconds"] <= after - shards[0]["planned_at"]
    assert m["records_in"] == 4.0 and m["docs_per_s"] == 4.0 / m["seconds"]
    assert m["input_bytes"] == corpus.stat().st_size and m["bytes_per_s"] == m["input_bytes"] / m["seconds"]
    assert kfp_metrics.logged["docs_per_s"] == m["docs_per_s"]
    # peak RSS of each task type, from the markers the tasks left
    assert {k for k in m if k.startswith("peak_rss_mb.")} == {f"peak_rss_mb.{t}" for t in ("filter", "exact", "near", "cluster", "write", "collect")}
    assert all(m[k] > 50 for k in m if k.startswith("peak_rss_mb."))
    assert clean.started_and_size([{"index": 0}]) == (None, None)  # items of an older plan: no start, no size
    assert clean.started_and_size([{"planned_at": 5.0, "bytes": 3}, {"planned_at": 4.0, "bytes": None}]) == (4.0, None)
    assert clean.started_and_size([{"planned_at": 5.0, "bytes": 3.0}, {"planned_at": 4.0, "bytes": 2}]) == (4.0, 5)


def _sha8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]
