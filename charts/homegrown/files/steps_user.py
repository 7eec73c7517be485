"""Give the pipeline steps their own MLflow user, with only the grants they need.

Run by the chart's post-install/post-upgrade Job as the MLflow admin (MLflow's basic-auth REST
API, through mlflow's own clients), against a server that may still be starting:

    python steps_user.py --tracking-uri URL --admin DIR --steps DIR --grants FILE

DIR holds a Secret's files MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (the admin's,
the steps'); FILE is JSON {"permission": "EDIT", "experiments": [names], "registered_models":
[names]}. Idempotent: creates the user or resets its password to the Secret's, takes any admin
flag away, creates missing experiments and registered models (as the admin) and grants the user
`permission` on each, replacing an earlier grant. Exits 1 with the reason on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from pathlib import Path


def read_credentials(directory: Path) -> tuple[str, str]:
    """(username, password) from a mounted Secret; raises ValueError if either is empty."""
    username = (directory / "MLFLOW_TRACKING_USERNAME").read_text().strip()
    password = (directory / "MLFLOW_TRACKING_PASSWORD").read_text().rstrip("\n")
    if not username or not password:
        raise ValueError(f"{directory}: MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD must not be empty")
    return username, password


def wait_for_server(tracking_uri: str, timeout_s: float) -> None:
    """Poll /health until it answers OK; raises TimeoutError after timeout_s seconds."""
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        try:
            with urllib.request.urlopen(f"{tracking_uri}/health", timeout=5) as response:
                body = response.read().strip()
                if body == b"OK":
                    return
                last = body
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{tracking_uri}/health did not answer OK within {timeout_s:.0f} s: {last}")
        time.sleep(2)


def _grant(auth, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)  # a new level replaces the old
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def ensure_steps_user(tracking_uri: str, steps: tuple[str, str], grants: dict) -> list[str]:
    """Make the server match the Secret and the grants (the admin's credentials in the env);
    returns what was done, one line each."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient
    from mlflow.tracking import MlflowClient

    username, password = steps
    auth, client = AuthServiceClient(tracking_uri), MlflowClient(tracking_uri)
    done = []
    try:
        user = auth.get_user(username)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        auth.create_user(username, password)
        done.append(f"created user {username}")
    else:
        auth.update_user_password(username, password)
        done.append(f"reset the password of user {username} to the Secret's")
        if user.is_admin:
            auth.update_user_admin(username, False)
            done.append(f"took the admin flag from {username}")
    permission = grants["permission"]
    for name in grants["experiments"]:
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
        _grant(auth, username, "experiment", experiment_id, permission)
        done.append(f"{permission} on experiment {name} ({experiment_id})")
    for name in grants["registered_models"]:
        try:
            client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            client.create_registered_model(name)
        _grant(auth, username, "registered_model", name, permission)
        done.append(f"{permission} on registered model {name}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--admin", type=Path, required=True, help="mounted admin Secret")
    parser.add_argument("--steps", type=Path, required=True, help="mounted steps-user Secret")
    parser.add_argument("--grants", type=Path, required=True, help="JSON: permission, experiments, registered_models")
    parser.add_argument("--wait", type=float, default=600, help="seconds to wait for the server")
    args = parser.parse_args(argv)
    try:
        admin, steps = read_credentials(args.admin), read_credentials(args.steps)
        if admin[0] == steps[0]:
            raise ValueError(f"the steps' user must not be the admin ({admin[0]})")
        grants = json.loads(args.grants.read_text())
        wait_for_server(args.tracking_uri, args.wait)
        os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = admin
        for line in ensure_steps_user(args.tracking_uri, steps, grants):
            print(line, flush=True)
    except Exception as exc:  # the Job's log is all a person sees: say what failed, nothing more
        print(f"steps_user: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
