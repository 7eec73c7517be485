"""A recorded Kubernetes API for tests (no API server can run here): the real kubernetes client
with its HTTP layer (the urllib3 pool manager) replaced by a fake server that records every
request and answers from the test's script; and the checks of an object against a released CRD.

    class MyApi(FakeApiServer):
        def route(self, method, path, query, body):   # -> reply(...)
            ...
    server = MyApi()
    api = api_for(server)            # a kubernetes.client.ApiClient talking to `server`
    server.calls("POST", "/apis/...")  # [(method, path, query, body), ...]

    schema = crd_schema(CRDS / "x.yaml", "v1")
    assert crd_problems(body, schema) == []   # schema errors, strict metadata, pruned fields
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import kubernetes_validate
import pytest
import urllib3
import yaml
from kubernetes import client

# the released CRDs, beside the repository: ../shared/crds/
CRDS = Path(__file__).resolve().parents[2] / "shared" / "crds"

Request = tuple[str, str, dict, object]  # method, path, query (with the encoded fields), JSON body


class FakeApiServer:
    """Records the requests the kubernetes client makes and answers each with `route`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.headers: list[dict] = []  # each request's headers, in the order of `requests`

    def request(self, method, url, fields=None, body=None, headers=None, preload_content=True, timeout=None, **kw):
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query)) | {k: str(v) for k, v in (fields or [])}
        payload = json.loads(body) if body else None
        self.requests.append((method, parts.path, query, payload))
        self.headers.append(dict(headers or {}))
        return self.route(method, parts.path, query, payload)

    def route(self, method: str, path: str, query: dict, body: object) -> urllib3.HTTPResponse:
        return reply(404, error(404, "NotFound", f"no route for {method} {path}"))

    def calls(self, method: str, path_prefix: str = "") -> list[Request]:
        return [r for r in self.requests if r[0] == method and r[1].startswith(path_prefix)]


def error(code: int, reason: str, message: str) -> dict:
    """A Kubernetes Status object, as the API server answers a failed request."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message,
            "code": code}  # fmt: skip


def reply(code: int, payload, content_type: str = "application/json") -> urllib3.HTTPResponse:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return urllib3.HTTPResponse(body=data.encode(), status=code, reason="x", headers={"Content-Type": content_type})


def api_for(server: FakeApiServer) -> client.ApiClient:
    """A kubernetes ApiClient whose requests go to `server`."""
    api = client.ApiClient(client.Configuration(host="https://k8s.test"))
    api.rest_client.pool_manager = server
    return api


def pruned(obj: object, schema: dict, path: str) -> list[str]:
    """Paths in `obj` that a structural schema does not declare: the API server drops them silently."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(obj, list):
        return [p for i, item in enumerate(obj) for p in pruned(item, schema.get("items", {}), f"{path}[{i}]")]
    if not isinstance(obj, dict):
        return []
    found = []
    for key, value in obj.items():
        sub = schema.get("properties", {}).get(key, schema.get("additionalProperties"))
        if isinstance(sub, dict):
            found += pruned(value, sub, f"{path}.{key}")
        elif sub is not True:
            found.append(f"{path}.{key}")
    return found


def crd_schema(path: Path, version: str) -> dict:
    """The openAPIV3Schema of one version of a released CRD file; fails the test when it is missing."""
    if not path.is_file():
        pytest.fail(f"{path} is missing: the released CRDs are read from ../shared/crds/")
    crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    [found] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return found["schema"]["openAPIV3Schema"]


def crd_problems(body: dict, schema: dict) -> list[str]:
    """Schema errors and pruned fields of an object against a released CRD; its metadata (which
    the CRD leaves to the API server) against the strict ObjectMeta schema."""
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft4Validator(schema).iter_errors(body)]  # fmt: skip
    rest = {k: v for k, v in body.items() if k != "metadata"}
    try:
        holder = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": body["metadata"]}
        kubernetes_validate.validate(holder, kubernetes_validate.latest_version(), strict=True)
    except kubernetes_validate.ValidationError as exc:
        errors.append(f"metadata: {str(exc).splitlines()[0]}")
    return errors + [f"pruned: {p}" for p in pruned(rest, schema, "")]
