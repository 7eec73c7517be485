"""`homegrown rollout NAME`: the champion's canary gets all traffic on the fake KServe API (one merge
patch, waited for, one completion), its version is tagged deployed again; without a canary that may
be ended (no InferenceService, not homegrown's, none in progress, not Ready, not the champion) nothing
is written and it says why, with exit status 2."""

from __future__ import annotations

import httpx
import pytest

from components.register import history
from components.serve import deploy
from pipelines import cli, rollout
from tests.components.test_serve_deploy import ADDRESS, ISVC, NAME, NS, URL, Endpoint, KServeApi, spec
from tests.kube_api import api_for
from tests.pipelines import test_rollback

LOAD_CLIENT = deploy.load_client
champion, promoted = test_rollback.champion, test_rollback.promoted  # a helper, a fixture
CANARY = {"spec": {"predictor": {"canaryTrafficPercent": 100}}}


def said(err: str) -> str:
    """What the command wrote to stderr from its own first line on: a logging handler another test
    bound to a captured stream since closed may print "--- Logging error ---" blocks before it."""
    start = err.find("homegrown rollout:")
    return err[start:] if start >= 0 else err


def deployed(server: KServeApi, endpoint: Endpoint, *versions: str) -> None:
    """What the deploy step leaves after deploying `versions` of lm in turn: the last a 10 % canary."""
    for version in versions:
        deploy.deploy(spec(version, storage_uri=f"s3://b/runs/serving/lm/v{version}"), api_for(server),
                      endpoint.client(), poll_s=0, log=lambda _: None)  # fmt: skip


@pytest.fixture
def cluster(monkeypatch) -> tuple[KServeApi, Endpoint]:
    """The command's cluster and the model server behind its URLs: deploy.load_client answers the
    fake API, and the smoke request's own httpx.Client reaches the Endpoint."""
    server, endpoint = KServeApi(["ready"]), Endpoint()
    monkeypatch.setattr(deploy, "load_client", lambda: api_for(server))
    real = httpx.Client
    monkeypatch.setattr(httpx, "Client", lambda **kw: real(transport=httpx.MockTransport(endpoint)))
    return server, endpoint


def command(sqlite_uri: str, *extra: str) -> int:
    return cli.main(["rollout", "lm", "--tracking-uri", sqlite_uri, "--inference-service", NAME, "--namespace", NS,
                     *extra])  # fmt: skip


def test_rollout_gives_the_champions_canary_all_traffic(promoted, sqlite_uri):
    server, endpoint = KServeApi(["ready"]), Endpoint()
    deployed(server, endpoint, "1", "2")
    assert server.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    patches, gets = len(server.calls("PATCH")), len(server.calls("GET", ISVC))
    # Ready as the deploy left it; after the write (which restarts the script): not yet seen, then Ready
    server.script, server.step = ["pending", "creating", "ready"], 2
    lines: list[str] = []
    done = rollout.rollout("lm", sqlite_uri, NAME, NS, api=api_for(server), http=endpoint.client(), poll_s=0,
                           log=lines.append)  # fmt: skip

    assert done == rollout.RolloutOutcome("lm", "2", "ml/homegrown", URL, "homegrown-predictor-00002",
                                          "homegrown-predictor-00001", 10, " world")  # fmt: skip
    [(_, path, _, body)] = server.calls("PATCH")[patches:]
    assert (path, body) == (ISVC, CANARY)
    assert len(server.calls("GET", ISVC)) - gets == 2 + 3  # its check, promote_canary's, then until Ready
    assert len(server.revisions) == 2  # the canary's revision takes the traffic: no new one
    assert str(endpoint.requests[-1].url) == ADDRESS + "/openai/v1/completions"  # all traffic: the service
    tag = promoted.get_model_version("lm", "2").tags[history.DEPLOYED_TAG]
    assert tag.endswith(f" ml/homegrown {URL}") and len(tag.split()) == 3
    assert lines[0] == "[rollout] ml/homegrown: revision homegrown-predictor-00002 (version 2) goes from 10 % to " \
                       "all traffic"  # fmt: skip
    assert lines[-1] == f"[deploy] ml/homegrown answers at {URL}: revision homegrown-predictor-00002 has 100 % of " \
                        "traffic"  # fmt: skip


def test_the_command_says_what_it_did_then_that_nothing_is_left(promoted, sqlite_uri, cluster, capsys):
    server, endpoint = cluster
    deployed(server, endpoint, "1", "2")
    assert command(sqlite_uri) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"lm: version 2 (revision homegrown-predictor-00002) has all traffic of InferenceService ml/homegrown at "
        f"{URL}, was 10 %; homegrown-predictor-00001 no longer serves")  # fmt: skip
    assert server.calls("PATCH")[-1][3] == CANARY and server.isvc["spec"]["predictor"]["canaryTrafficPercent"] == 100

    patches = len(server.calls("PATCH"))
    assert command(sqlite_uri) == 2
    assert said(capsys.readouterr().err) == ("homegrown rollout: no canary in progress on InferenceService ml/homegrown: its "
                                       "newest revision homegrown-predictor-00002 already has all traffic\n")  # fmt: skip
    assert len(server.calls("PATCH")) == patches


def test_a_canary_that_may_not_be_ended_is_left_as_it_is(promoted, sqlite_uri, cluster, capsys):
    server, endpoint = cluster
    assert command(sqlite_uri) == 2  # nothing deployed yet
    assert said(capsys.readouterr().err).startswith("homegrown rollout: no InferenceService ml/homegrown: nothing to roll "
                                              "out (check --inference-service / --namespace")  # fmt: skip

    deployed(server, endpoint, "1")
    assert command(sqlite_uri) == 2  # the first deploy took all traffic
    assert "no canary in progress on InferenceService ml/homegrown" in said(capsys.readouterr().err)

    deployed(server, endpoint, "2")
    server.script, server.step = ["failed"], 0
    assert command(sqlite_uri) == 2
    assert said(capsys.readouterr().err) == (
        "homegrown rollout: the canary of InferenceService ml/homegrown (revision homegrown-predictor-00002, 10 % of "
        "traffic) is not Ready (IngressReady=True; PredictorReady=False (RevisionFailed: Revision failed: container "
        "exited with code 1); Ready=False (RevisionFailed: Revision failed: container exited with code 1); model: "
        "ModelLoadFailed: config.json: no such file): wait for it, or `homegrown rollback lm`\n")  # fmt: skip

    server.script = ["ready"]
    promoted.set_registered_model_alias("lm", "champion", "1")  # a rollback whose InferenceService did not follow
    assert command(sqlite_uri) == 2
    assert said(capsys.readouterr().err) == (
        "homegrown rollout: the canary of InferenceService ml/homegrown serves version 2 of 'lm', but its champion "
        "is version 1: the canary must not get all traffic (deploy the champion again, or fix --inference-service)\n")

    assert len(server.calls("PATCH")) == 1 and champion(promoted) == "1"  # deploying 2; nothing since


def test_not_homegrowns_inference_service_is_refused(promoted, sqlite_uri):
    server = KServeApi(["ready"])
    server.isvc = {"metadata": {"name": NAME, "namespace": NS, "generation": 1},
                   "spec": {"predictor": {"canaryTrafficPercent": 10}}}  # fmt: skip
    with pytest.raises(rollout.NothingToRollOut, match=r"^InferenceService ml/homegrown was not created by homegrown "
                       r"\(no label app.kubernetes.io/managed-by=homegrown\): end its canary by hand$"):  # fmt: skip
        rollout.rollout("lm", sqlite_uri, NAME, NS, api=api_for(server), log=print)
    assert server.calls("PATCH") == []


def test_failures_exit_1_with_the_reason(promoted, sqlite_uri, cluster, tmp_path, monkeypatch, capsys):
    server, endpoint = cluster
    deployed(server, endpoint, "1", "2")
    endpoint.codes = [500]  # the change was made, but the revision does not answer
    assert command(sqlite_uri) == 1
    err = said(capsys.readouterr().err)
    assert err.startswith(f"homegrown rollout: InferenceService ml/homegrown is Ready but did not answer a completion "
                          f"at {ADDRESS}/openai/v1/completions (500: upstream answered 500)\nconditions:\n")  # fmt: skip
    assert server.calls("PATCH")[-1][3] == CANARY
    assert history.DEPLOYED_TAG not in promoted.get_model_version("lm", "2").tags  # not marked: it did not answer

    monkeypatch.setattr(deploy, "load_client", LOAD_CLIENT)  # no cluster at all
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert command(sqlite_uri) == 1
    assert said(capsys.readouterr().err).startswith("homegrown rollout: no Kubernetes credentials")
