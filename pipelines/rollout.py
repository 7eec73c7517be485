"""`homegrown rollout NAME`: end the canary of the champion's KServe InferenceService. The deploy step
starts a new champion on `canaryTrafficPercent` of the traffic beside the previous revision; once it
has proved itself, this gives its revision all traffic (deploy.promote_canary), waits for Ready,
sends one completion and tags the version `deployed` again (now serving all traffic).

The InferenceService is --inference-service (default: the name the deploy step gives it, made from
NAME) in --namespace (default: this pod's, else `default`). Nothing is changed unless a canary is in
progress (the spec's canaryTrafficPercent under 100), its newest revision is Ready, and that revision
serves the champion (its homegrown/model-version label is the `champion` alias's version): after a
rollback whose InferenceService did not follow, the canary is the version just rolled back from, and
must not get all traffic. Exit status: 0 done, 2 nothing changed (no such InferenceService, not
homegrown's, no canary, canary not Ready or not the champion; the message says which), 1 the
cluster or MLflow could not be reached, or the InferenceService did not become Ready or answer
after the change (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELP = "end the champion's canary: give its KServe InferenceService's newest revision all traffic"
NOTHING = 2


class NothingToRollOut(RuntimeError):
    """No canary to end (or none that may be ended); nothing was changed. The message says why."""


@dataclass(frozen=True)
class RolloutOutcome:
    name: str
    version: str  # the champion's version, now on all traffic
    inference_service: str  # "<namespace>/<name>"
    url: str
    revision: str  # the newest revision, now on all traffic
    retired_revision: str  # the revision that had the rest of the traffic ("" when the status named none)
    canary_percent: int  # the newest revision's share before
    answer: str  # the smoke completion's text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines.rollback import add_model_arguments

    add_model_arguments(parser, timeout_s=600.0)


def canary(obj: dict[str, Any]) -> tuple[int | None, str, str]:
    """(the spec's canaryTrafficPercent (None: unset), the newest revision, the revision with the rest
    of the traffic ("" when none)) of an InferenceService."""
    percent = ((obj.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    predictor = ((obj.get("status") or {}).get("components") or {}).get("predictor") or {}
    traffic = predictor.get("traffic") or []
    rest = [t.get("revisionName", "") for t in traffic if not t.get("latestRevision") and t.get("percent")]
    previous = rest[0] if rest else ""
    return percent, predictor.get("latestCreatedRevision", ""), previous


def not_ready(obj: dict[str, Any]) -> bool:
    """Whether the status is not (yet) that of a Ready newest revision for the current spec."""
    status = obj.get("status") or {}
    if (status.get("observedGeneration") or 0) < ((obj.get("metadata") or {}).get("generation") or 0):
        return True
    predictor = (status.get("components") or {}).get("predictor") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return not ready or predictor.get("latestCreatedRevision") != predictor.get("latestReadyRevision")


def rollout(name: str, tracking_uri: str | None = None, inference_service: str | None = None,
            namespace: str | None = None, api: Any = None, http: Any = None, timeout_s: float = 600.0,
            poll_s: float = 5.0, log: Callable[[str], None] = print) -> RolloutOutcome:  # fmt: skip
    """End the canary (see the module docstring). Raises NothingToRollOut (nothing changed),
    DeployError (no credentials, the API refused, or after the change: not Ready, no answer)."""
    from components import mlflow_runs
    from components.register import history
    from components.serve import deploy
    from components.serve.inference_service import PART_OF, VERSION_LABEL, isvc_name
    from components.train.trainjob import pod_namespace

    isvc = inference_service or isvc_name(name)
    ns = namespace or pod_namespace() or "default"
    where = f"{ns}/{isvc}"
    api = api if api is not None else deploy.load_client()
    found = deploy.get(api, ns, isvc)
    if found is None:
        raise NothingToRollOut(f"no InferenceService {where}: nothing to roll out (check --inference-service / "
                               "--namespace; the deploy step creates it when the run config has serve:)")  # fmt: skip
    labels = (found.get("metadata") or {}).get("labels") or {}
    if labels.get(deploy.MANAGED_BY) != PART_OF[deploy.MANAGED_BY]:
        label = f"{deploy.MANAGED_BY}={PART_OF[deploy.MANAGED_BY]}"
        raise NothingToRollOut(f"InferenceService {where} was not created by homegrown (no label {label}): "
                               "end its canary by hand")
    percent, revision, previous = canary(found)
    if percent is None or percent >= 100:
        raise NothingToRollOut(f"no canary in progress on InferenceService {where}: its newest revision "
                               f"{revision or '(none yet)'} already has all traffic")  # fmt: skip
    if not_ready(found):
        shown = "; ".join(deploy.conditions(found)) or "no status yet"
        raise NothingToRollOut(f"the canary of InferenceService {where} (revision {revision or '?'}, {percent} % "
                               f"of traffic) is not Ready ({shown}): wait for it, or `homegrown rollback {name}`")
    version = labels.get(VERSION_LABEL, "")
    mlflow_runs.configure(mlflow_runs.resolve_tracking_uri(tracking_uri))
    champion = history.champion(name)
    if champion is None or str(champion.version) != version:
        now = f"version {champion.version}" if champion is not None else "none"
        raise NothingToRollOut(f"the canary of InferenceService {where} serves version {version or '?'} of {name!r}, "
                               f"but its champion is {now}: the canary must not get all traffic (deploy the "
                               "champion again, or fix --inference-service)")  # fmt: skip
    log(f"[rollout] {where}: revision {revision} (version {version}) goes from {percent} % to all traffic")
    done = deploy.promote_canary(isvc, ns, api, http, poll_s=poll_s, timeout_s=timeout_s, log=log)
    history.mark_deployed(name, version, where, done.url)
    return RolloutOutcome(name, version, where, done.url, done.revision, previous, int(percent), done.answer)


def cmd_rollout(args: argparse.Namespace) -> int:
    from components.serve.deploy import DeployError

    try:
        done = rollout(args.name, args.tracking_uri, args.inference_service, args.namespace, timeout_s=args.timeout)
    except NothingToRollOut as exc:
        print(f"homegrown rollout: {exc}", file=sys.stderr)
        return NOTHING
    except DeployError as exc:
        print(f"homegrown rollout: {exc}", file=sys.stderr)
        return 1
    retired = f"; {done.retired_revision} no longer serves" if done.retired_revision else ""
    print(f"{done.name}: version {done.version} (revision {done.revision}) has all traffic of InferenceService "
          f"{done.inference_service} at {done.url}, was {done.canary_percent} %{retired}")  # fmt: skip
    return 0
