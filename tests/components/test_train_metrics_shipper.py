"""The training worker's MLflow shipper: every metric arrives, in few log_batch calls."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from components.train.metrics_shipper import MetricsShipper


def counting_tracker(sqlite_uri, monkeypatch, tmp_path, **kwargs) -> tuple[MetricsShipper, str, list[int]]:
    client = MlflowClient(sqlite_uri)
    experiment = client.create_experiment("tracker", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")  # MetricsShipper sets them (it owns its process); undone after the test
        monkeypatch.delenv(name)
    tracker = MetricsShipper(enabled=True, **kwargs)
    sizes: list[int] = []
    log_batch = tracker.client.log_batch

    def counted(run_id, metrics=(), params=(), tags=()):
        sizes.append(len(metrics))
        return log_batch(run_id, metrics=metrics, params=params, tags=tags)

    tracker.client.log_batch = counted
    return tracker, run_id, sizes


def test_metrics_of_many_steps_go_in_few_calls_and_all_arrive(sqlite_uri, monkeypatch, tmp_path):
    tracker, run_id, sizes = counting_tracker(sqlite_uri, monkeypatch, tmp_path, flush_s=0.5)
    tracker.params({"zero_stage": 2}, {"train_batch_size": 16})
    started = time.monotonic()
    for step in range(1, 201):  # ~1.2 s of steps, four metrics each
        tracker.metrics({"train/loss": 10.0 - step / 100, "train/lr": step * 1e-5, "train/tokens_per_s": 1e4,
                         "train/grad_norm": 1.0}, step=step)  # fmt: skip
        time.sleep(0.006)
    elapsed = time.monotonic() - started
    tracker.close(True)

    client = MlflowClient(sqlite_uri)
    history = client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 201))
    assert {m.step: m.value for m in history}[150] == 10.0 - 1.5
    assert len(client.get_metric_history(run_id, "train/lr")) == 200
    metric_calls = [n for n in sizes if n]
    assert sum(metric_calls) == 800
    # the first step at once, then one call per flush interval (not all of it at close()), and the rest
    assert 3 <= len(metric_calls) <= elapsed / 0.5 + 3, metric_calls
    assert client.get_run(run_id).data.params == {"train.zero_stage": "2"}
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_backlog_goes_in_calls_within_mlflows_limit(sqlite_uri, monkeypatch, tmp_path):
    tracker, run_id, sizes = counting_tracker(sqlite_uri, monkeypatch, tmp_path, flush_s=60.0)
    for step in range(1, 601):  # logged faster than one flush: all but the first wait for close()
        tracker.metrics({"a": float(step), "b": 1.0, "c": 2.0}, step=step)
    started = time.monotonic()
    tracker.close(True)
    assert time.monotonic() - started < 30, "close() cuts the flush wait short"
    assert max(sizes) <= MetricsShipper.MAX_METRICS_PER_CALL and sum(sizes) == 1800
    assert len(sizes) <= 3, sizes  # [3, 999, 798] or, if the shipper starts late, [999, 801]
    steps = [m.step for m in MlflowClient(sqlite_uri).get_metric_history(run_id, "a")]
    assert sorted(steps) == list(range(1, 601))


def test_a_refused_item_is_dropped_not_retried_and_metrics_behind_it_arrive(sqlite_uri, monkeypatch, tmp_path):
    """A resume that logs into the same MLflow run with a changed param value (MLflow forbids
    changing one) must not hold back the metrics queued behind it until close()'s drain deadline."""
    tracker, run_id, _ = counting_tracker(sqlite_uri, monkeypatch, tmp_path, flush_s=0.1, drain_s=60.0)
    tracker.params({"learning_rate": 0.01}, {"train_batch_size": 16})
    tracker.close(True)
    resumed = MetricsShipper(enabled=True, flush_s=0.1, drain_s=60.0)  # same MLFLOW_RUN_ID, as a retried step
    resumed.params({"learning_rate": 0.001}, {"train_batch_size": 16})
    resumed.tags({"resume.changed.train.learning_rate": "0.01 -> 0.001"})
    resumed.metrics({"train/loss": 4.0}, step=5)
    started = time.monotonic()
    resumed.close(True)

    assert time.monotonic() - started < 10  # not the 60 s drain
    run = MlflowClient(sqlite_uri).get_run(run_id)
    assert run.data.params == {"train.learning_rate": "0.01"}
    assert run.data.tags["resume.changed.train.learning_rate"] == "0.01 -> 0.001"
    assert [m.value for m in MlflowClient(sqlite_uri).get_metric_history(run_id, "train/loss")] == [4.0]
