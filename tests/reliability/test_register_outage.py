"""The MLflow tracking server down at registration: the register step fails within seconds,
naming the server and what to do, and changes nothing; killed mid-registration, the rerun once
the server is back completes the half-registered version instead of adding a second one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components import mlflow_runs
from components.register import registry
from components.register.config import RegisterConfig
from tests.components.test_register import tiny_model_dir  # noqa: F401 (a fixture)
from tests.loopback import free_port
from tests.reliability.test_mlflow_outage import start_server, stop_server

CONFIG = RegisterConfig(model_name="tiny")
LINEAGE = {"data_manifest_digest": "abc", "pipeline_run_name": "outage-1"}


def register_step(uri: str, model_dir: Path, bits_per_byte: float, champion_bits_per_byte: float | None) -> str:
    """What the pipeline's register and promote steps do: gate, register, move `champion` if it passed."""
    with mlflow_runs.step_run("register", uri, experiment="t"):
        decision = registry.decide(bits_per_byte, champion_bits_per_byte, CONFIG)
        tags = {**LINEAGE, "validation_status": decision.status}
        version, _ = registry.log_and_register(str(model_dir), CONFIG, tags)
    if decision.passed:
        registry.promote(CONFIG.model_name, version)
    return version


@pytest.mark.slow
def test_server_down_at_registration_fails_clearly_and_changes_nothing(tiny_model_dir, tmp_path):  # noqa: F811
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        client = MlflowClient(uri)
        run_id = client.create_run(mlflow_runs.ensure_experiment(uri, "t")).info.run_id  # an earlier champion
        client.create_registered_model("tiny")
        client.create_model_version("tiny", f"runs:/{run_id}/model", run_id, tags={registry.DIGEST_TAG: "0" * 64})
        client.set_registered_model_alias("tiny", registry.CHAMPION, "1")
        stop_server(server)

        began = time.monotonic()
        with pytest.raises(mlflow_runs.TrackingUnavailable) as failed:
            register_step(uri, tiny_model_dir, 1.0, 2.0)  # the gate would pass: champion must still not move
        took = time.monotonic() - began
        message = str(failed.value)
        assert message.startswith(f"the MLflow tracking server at {uri} did not answer while running the register "
                                  "step (") and "Connection refused" in message, message  # fmt: skip
        assert message.endswith(f"Once it is up ({uri}/health answers), rerun the register step."), message
        assert took < 30, f"{took:.0f} s of hidden retries before failing"
        with pytest.raises(mlflow_runs.TrackingUnavailable, match="looking up the champion"):
            registry.champion_version("tiny")  # an outage is not "no champion yet"

        server = start_server(tmp_path, port)
        assert [v.version for v in client.search_model_versions("name = 'tiny'")] == ["1"]
        assert client.get_registered_model("tiny").aliases == {registry.CHAMPION: "1"}
    finally:
        if server.poll() is None:
            stop_server(server)


@pytest.mark.slow
def test_server_killed_mid_registration_rerun_completes_one_version(tiny_model_dir, tmp_path, monkeypatch):  # noqa: F811
    from mlflow.store.model_registry.rest_store import RestStore

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    create = RestStore.create_model_version

    def create_then_die(self, *args, **kwargs):
        version = create(self, *args, **kwargs)
        stop_server(server)  # the version is in the registry; nothing after it has run
        return version

    try:
        monkeypatch.setattr(RestStore, "create_model_version", create_then_die)
        with pytest.raises(mlflow_runs.TrackingUnavailable) as failed:
            register_step(uri, tiny_model_dir, 2.0, None)
        message = str(failed.value)
        assert message.startswith(f"the MLflow tracking server at {uri} did not answer while registering model "
                                  "'tiny' ("), message  # fmt: skip
        assert message.endswith(f"Once it is up ({uri}/health answers), rerun the register step: it completes a "
                                "half-registered version instead of adding another."), message  # fmt: skip
        monkeypatch.setattr(RestStore, "create_model_version", create)

        server = start_server(tmp_path, port)
        version = register_step(uri, tiny_model_dir, 2.0, None)  # the rerun

        client = MlflowClient(uri)
        assert [v.version for v in client.search_model_versions("name = 'tiny'")] == [version]
        tags = client.get_model_version("tiny", version).tags
        digest = registry.weights_digest(tiny_model_dir)
        assert tags == {**tags, **LINEAGE, "validation_status": "passed", registry.DIGEST_TAG: digest}
        assert client.get_registered_model("tiny").aliases == {registry.CANDIDATE: version, registry.CHAMPION: version}
        found = registry.champion_model_dir("tiny", tmp_path / "champion")
        assert found is not None and found[1] == version and registry.weights_digest(found[0]) == digest
    finally:
        if server.poll() is None:
            stop_server(server)
