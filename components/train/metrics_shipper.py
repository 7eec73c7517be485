"""Training metrics to MLflow from rank 0, off the training loop's thread.

The worker logs into the run the launcher named in MLFLOW_RUN_ID (the pipeline's train step);
without it nothing is shipped and every call is a no-op.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any


class MetricsShipper:
    """MLflow from rank 0, and only when the launcher injected MLFLOW_RUN_ID.

    The loop only enqueues; a background thread ships to the tracking server with retries and
    backoff. A server that is slow or down costs the loop nothing and loses nothing: what could
    not be sent waits and goes once the server answers again. Metrics are coalesced: the first
    logged step goes at once, later ones at most every `flush_s` seconds in one `log_batch` call
    (a call costs the server and this process a transaction's worth of CPU, on the same cores as
    the ranks). close() sends what is left and gives the thread `drain_s` seconds to deliver it,
    then says what it could not deliver.
    """

    MAX_METRICS_PER_CALL = 1000  # MLflow's limit for one log_batch

    def __init__(self, enabled: bool, system_metrics: bool = False, drain_s: float = 300.0, flush_s: float = 5.0):
        self.run_id = os.environ.get("MLFLOW_RUN_ID") if enabled else None
        if not self.run_id:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # Our own retry loop rides out outages; MLflow's (7 tries, minutes) would stall the queue.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        import mlflow
        from mlflow.tracking import MlflowClient

        from components.mlflow_runs import resolve_tracking_uri

        self.mlflow = mlflow
        self.client = MlflowClient(resolve_tracking_uri())
        self.drain_s = drain_s
        self.flush_s = flush_s
        self.queue: queue.Queue = queue.Queue()
        self.closing = threading.Event()
        self.deadline: float | None = None
        self.active = False
        if system_metrics:  # CPU, memory, disk, network (GPU with nvidia-ml-py) sampled by MLflow's thread
            try:
                mlflow.set_tracking_uri(resolve_tracking_uri())
                mlflow.start_run(run_id=self.run_id, log_system_metrics=True)
                self.active = True
            except Exception as exc:  # the server may be down now; training goes on without them
                print(f"[train] MLflow system metrics off: {exc}", flush=True)
        self.thread = threading.Thread(target=self._ship, name="mlflow-shipper", daemon=True)
        self.thread.start()

    def params(self, params: dict[str, Any], ds_config: dict[str, Any]) -> None:
        if self.run_id:
            self.queue.put(("params", {f"train.{k}": v for k, v in params.items()}))
            self.queue.put(("dict", ds_config))

    def tags(self, tags: dict[str, str]) -> None:
        if self.run_id:
            self.queue.put(("tags", dict(tags)))

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.run_id:
            self.queue.put(("metrics", (dict(metrics), step, int(time.time() * 1000))))

    def close(self, ok: bool, drain_s: float | None = None) -> None:
        """drain_s: how long to wait for undelivered metrics, if not the constructor's."""
        if not self.run_id:
            return
        if drain_s is not None:
            self.drain_s = drain_s
        status = "FINISHED" if ok else "FAILED"
        if self.active:  # in this thread, which started it: stops the system-metrics sampler
            try:
                self.mlflow.end_run(status=status)
            except Exception as exc:
                print(f"[train] MLflow end_run failed ({type(exc).__name__}); the shipper marks the run", flush=True)
        self.queue.put(("end", status))
        self.deadline = time.monotonic() + self.drain_s
        self.closing.set()
        self.thread.join(self.drain_s + 5)
        if left := self.queue.qsize() + (1 if self.thread.is_alive() else 0):
            print(f"[train] MLflow unreachable for {self.drain_s:.0f} s: {left} batch(es) of metrics not delivered "
                  "(they are in result.json and the log)", flush=True)  # fmt: skip

    def _send(self, kind: str, payload: Any) -> None:
        from mlflow.entities import Metric, Param, RunTag

        if kind == "metrics":  # [(values, step, stamp), ...], oldest first; a retry resumes where it failed
            while payload:
                batch, taken = [], 0
                for values, step, stamp in payload:
                    if batch and len(batch) + len(values) > self.MAX_METRICS_PER_CALL:
                        break
                    batch += [Metric(k, float(v), stamp, step) for k, v in values.items()]
                    taken += 1
                self.client.log_batch(self.run_id, metrics=batch)
                del payload[:taken]
        elif kind == "params":
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in payload.items()])
        elif kind == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in payload.items()])
        elif kind == "dict":
            self.client.log_dict(self.run_id, payload, "ds_config.json")
        else:
            self.client.set_terminated(self.run_id, payload)

    def _ship(self) -> None:
        held = None  # an item taken off the queue while coalescing metrics, shipped next
        sent = float("-inf")
        while True:
            kind, payload = held or self.queue.get()
            held = None
            if kind == "metrics":
                self.closing.wait(max(0.0, sent + self.flush_s - time.monotonic()))
                payload = [payload]
                while held is None:
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                    if item[0] == "metrics":
                        payload.append(item[1])
                    else:
                        held = item
                sent = time.monotonic()
            if not self._deliver(kind, payload) or kind == "end":
                return

    def _deliver(self, kind: str, payload: Any) -> bool:
        """Sends one item, retrying with backoff; False once close()'s drain deadline passed. An
        item the server refuses (a 4xx answer but 429: e.g. a resumed run logging a changed param
        value into its run, which MLflow forbids) is dropped with a message, not retried: a retry
        would be refused again and hold back every metric queued behind it."""
        from mlflow.exceptions import MlflowException

        attempt = 0
        while True:
            try:
                self._send(kind, payload)
                break
            except MlflowException as exc:
                if 400 <= exc.get_http_status_code() < 500 and exc.get_http_status_code() != 429:
                    print(f"[train] MLflow refused the run's {kind} ({exc.message.splitlines()[0][:300]}); "
                          "not retried", flush=True)  # fmt: skip
                    return True
                if not self._wait(attempt, exc):
                    return False
                attempt += 1
            except Exception as exc:  # connection refused, 5xx, timeouts: wait and try again
                if not self._wait(attempt, exc):
                    return False
                attempt += 1
        if attempt:
            print(f"[train] MLflow reachable again after {attempt} retries", flush=True)
        return True

    def _wait(self, attempt: int, exc: Exception) -> bool:
        """Backs off before retry `attempt` + 1; False once close()'s drain deadline passed."""
        if attempt == 0:
            print(f"[train] MLflow unreachable ({type(exc).__name__}); metrics wait and are retried", flush=True)
        if self.deadline is not None and time.monotonic() > self.deadline:
            return False
        time.sleep(min(30.0, 0.5 * 2**attempt))
        return True
