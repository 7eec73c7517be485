"""`homegrown rollback NAME`: move the `champion` alias of registered model NAME back to the version
that was champion before it (the promote step records it, components/register/history.py), and point
the model's KServe InferenceService, when there is one, at that version's files with all traffic.

The InferenceService is --inference-service (default: the name the deploy step gives it, made from
NAME) in --namespace (default: this pod's, else `default`). Its files are the version's serving copy
(tag homegrown.serving_uri), written by the deploy step when it deployed that version; a version
never deployed gets one under --data-root. Exit status: 0 done, 2 nothing to roll back to (the alias
is unchanged), 1 the alias moved but the InferenceService could not follow (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HELP = "move the champion alias (and its KServe InferenceService) back to the previous champion"
NOTHING = 2


@dataclass(frozen=True)
class RollbackOutcome:
    name: str
    from_version: str
    to_version: str
    inference_service: str  # "<namespace>/<name>" moved with it, "" when none
    url: str
    storage_uri: str


def add_model_arguments(parser: argparse.ArgumentParser, timeout_s: float) -> None:
    """NAME, --tracking-uri, --inference-service, --namespace, --timeout: what rollback and rollout share."""
    parser.add_argument("name", metavar="NAME", help="registered model name, e.g. homegrown-demo")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, runs/mlflow.db)")
    parser.add_argument("--inference-service", metavar="ISVC",
                        help="the model's InferenceService (default: the deploy step's name for NAME)")
    parser.add_argument("--namespace", help="its namespace (default: this pod's, else `default`)")
    parser.add_argument("--timeout", type=float, default=timeout_s, metavar="S",
                        help="how long to wait for the InferenceService to be Ready (default: %(default)s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, timeout_s=1800.0)
    parser.add_argument("--data-root", metavar="URI",
                        help="where to write the serving copy of a version that has none (the run config's data_root)")


def rollback(name: str, tracking_uri: str | None = None, inference_service: str | None = None,
             namespace: str | None = None, data_root: str | None = None, api: Any = None, http: Any = None,
             timeout_s: float = 1800.0, poll_s: float = 5.0, log: Callable[[str], None] = print,
             ) -> RollbackOutcome:  # fmt: skip
    """Move `champion` back, then the InferenceService if one exists. Raises history.HistoryError
    (nothing to roll back to: the alias is unchanged) and, after the alias moved, DeployError (the
    InferenceService did not follow: not Ready, no answer, no serving copy and no data_root)."""
    from components import mlflow_runs, storage
    from components.register import history
    from components.serve import deploy
    from components.serve.inference_service import isvc_name
    from components.train.trainjob import pod_namespace

    mlflow_runs.configure(mlflow_runs.resolve_tracking_uri(tracking_uri))
    moved = history.rollback(name)
    log(f"[rollback] {name}: champion moved from version {moved.from_version} back to {moved.to_version}")
    isvc = inference_service or isvc_name(name)
    ns = namespace or pod_namespace() or "default"
    explicit = bool(inference_service or namespace)
    try:
        api = api if api is not None else deploy.load_client()
        found = deploy.get(api, ns, isvc)
    except deploy.DeployError as exc:
        if explicit:
            raise
        log(f"[rollback] InferenceService {ns}/{isvc} not checked ({exc}); only the alias moved")
        return RollbackOutcome(name, moved.from_version, moved.to_version, "", "", "")
    if found is None:
        if explicit:
            raise deploy.DeployError(f"no InferenceService {ns}/{isvc}: the champion alias moved, nothing else "
                                     "(check --inference-service / --namespace)")  # fmt: skip
        log(f"[rollback] no InferenceService {ns}/{isvc}: only the alias moved")
        return RollbackOutcome(name, moved.from_version, moved.to_version, "", "", "")
    labels = (found.get("metadata") or {}).get("labels") or {}
    if labels.get(deploy.MANAGED_BY) != deploy.PART_OF[deploy.MANAGED_BY]:
        raise deploy.DeployError(f"InferenceService {ns}/{isvc} exists but homegrown did not create it (no label "
                                 f"{deploy.MANAGED_BY}={deploy.PART_OF[deploy.MANAGED_BY]}): the champion alias moved, "
                                 "the InferenceService is left as it is")  # fmt: skip
    from mlflow.tracking import MlflowClient

    tagged = (MlflowClient().get_model_version(name, moved.to_version).tags or {}).get(history.SERVING_TAG)
    if data_root:
        try:
            uri = history.serving_copy(name, moved.to_version, data_root, log)
        except history.HistoryError as exc:
            raise deploy.DeployError(str(exc)) from exc
    elif tagged and history.has_files(tagged):
        uri = tagged
    else:
        raise deploy.DeployError(f"version {moved.to_version} of {name!r} has no serving copy (tag "
                                 f"{history.SERVING_TAG}){' with its files' if tagged else ''}: rerun with "
                                 "--data-root set to the run config's data_root to write one")  # fmt: skip
    current = (((found.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri", "")
    if not storage.is_s3(uri) and current.startswith("pvc://"):  # the deploy step's /data/... on the data PVC
        from pipelines.cluster import serving_storage_uri
        from pipelines.config import ClusterConfig

        try:
            uri = serving_storage_uri(uri, ClusterConfig(data_pvc=current.removeprefix("pvc://").split("/", 1)[0]))
        except ValueError as exc:
            raise deploy.DeployError(str(exc)) from exc
    if not storage.is_s3(uri) and not uri.startswith("pvc://"):
        raise deploy.DeployError(f"the serving copy {uri} is not on S3 or the data PVC, so KServe cannot read it: "
                                 "rerun with --data-root set to an s3:// URI")  # fmt: skip
    outcome = deploy.repoint(isvc, ns, uri, moved.to_version, api, http, poll_s=poll_s, timeout_s=timeout_s, log=log)
    history.mark_deployed(name, moved.to_version, f"{ns}/{isvc}", outcome.url)
    return RollbackOutcome(name, moved.from_version, moved.to_version, f"{ns}/{isvc}", outcome.url, uri)


def cmd_rollback(args: argparse.Namespace) -> int:
    from components.register.history import HistoryError
    from components.serve.deploy import DeployError

    try:
        done = rollback(args.name, args.tracking_uri, args.inference_service, args.namespace, args.data_root,
                        timeout_s=args.timeout)  # fmt: skip
    except HistoryError as exc:
        print(f"homegrown rollback: {exc}", file=sys.stderr)
        return NOTHING
    except DeployError as exc:
        print(f"homegrown rollback: the champion alias moved, but the InferenceService did not follow: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    where = f"; InferenceService {done.inference_service} serves it at {done.url}" if done.inference_service else ""
    print(f"{done.name}: champion is version {done.to_version} again (was {done.from_version}){where}")
    return 0
