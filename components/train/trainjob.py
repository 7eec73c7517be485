"""What the TrainJob is: the Kubeflow Trainer v2 `TrainJob` that runs the worker on N nodes, its
spec (`TrainJobSpec`), the checks on it (`check_spec`) and the object sent to the API server
(`build_trainjob`). Running it -- create, wait, stream rank 0's log, delete -- is in
components/train/trainjob_launch.py.

    spec = TrainJobSpec(name=job_name(run_name, 4), namespace="ml", image="homegrown/trainer:0.1.0",
                        num_nodes=4, gpus_per_node=8, nproc_per_node=8,
                        data_uri="s3://b/run/tok/manifest.json", output_uri="s3://b/run/train",
                        config_uri="s3://b/run/train/config.json", owner=owner_from_env(os.environ))
    body = build_trainjob(spec).to_dict()   # raises TrainJobSpecError naming each bad key

The TrainJob references the `torch-distributed` ClusterTrainingRuntime. Its torch plugin sets
PET_NNODES / PET_NPROC_PER_NODE / PET_NODE_RANK / PET_MASTER_ADDR / PET_MASTER_PORT on every
node, torchrun reads them as its defaults, so each node runs
`torchrun -m components.train.worker --data ... --output ... --config ...` unchanged. Pod
settings `spec.trainer` has no field for (volumes, tolerations, node selector, service account,
pod labels) go in one `spec.runtimePatches` entry that patches the runtime's `node` job.

The launcher's pod (`TrainJobSpec.owner`, from the downward-API variables POD_NAME_ENV /
POD_UID_ENV via `owner_from_env`) becomes the TrainJob's ownerReference, and a pipeline run's
TrainJobs carry RUN_LABEL: what cleans up after a killed launcher (see trainjob_launch).
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from kubeflow_trainer_api import models as m
from pydantic import Field

from components.config import Section
from components.k8s import SecretEnv, Toleration

GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
WORKER_COMMAND = ["torchrun", "-m", "components.train.worker"]
GRACE_MARGIN_S = 15  # pod grace beyond the ranks': torchrun's own shutdown and the last log lines
# The runtime's replicated job and container that `spec.trainer` overrides (Trainer constants.Node).
NODE = "node"
# Who owns our runtimePatches entry (the list is keyed by manager).
PATCH_MANAGER = "homegrown.train/launcher"
# Set by the torch plugin; the Trainer webhook rejects a TrainJob whose trainer.env sets them.
RESERVED_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
# JobSet names pods `<jobset>-<replicated job>-<job index>-<pod index>-<5 random>` and rejects a
# JobSet whose longest pod name exceeds a DNS-1035 label; the TrainJob's name is the JobSet's.
POD_NAME_MAX = 63
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# The launcher pod's name and uid, set on the train task from the downward API (metadata.name,
# metadata.uid); its namespace is the one its service account token is mounted for.
POD_NAME_ENV, POD_UID_ENV = "HOMEGROWN_POD_NAME", "HOMEGROWN_POD_UID"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# On every TrainJob of a pipeline run (value: the run's name): what the exit handler deletes by.
RUN_LABEL = "homegrown/pipeline-run"
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class PvcMount(Section):
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim in the job's namespace")
    mount_path: str = Field(description="absolute path in the trainer container, e.g. /data")
    read_only: bool = False


class OwnerPod(Section):
    """The pod a TrainJob belongs to (the KFP task's launcher pod): deleting that pod object
    deletes the TrainJob. Build it with owner_from_env()."""

    name: str = Field(description="the pod's metadata.name (downward API, env HOMEGROWN_POD_NAME)")
    uid: str = Field(description="the pod's metadata.uid (env HOMEGROWN_POD_UID); a uid that is not the "
                     "pod's makes the garbage collector delete the TrainJob at once")  # fmt: skip
    namespace: str | None = Field(
        None, description="the pod's namespace; None (unknown): build_trainjob sets no owner reference, since "
        "one to a pod in another namespace counts as absent and gets the TrainJob deleted at once",
    )  # fmt: skip


class TrainJobSpec(Section):
    """Everything the TrainJob forwards. `check_spec` checks values; pydantic checks types and keys."""

    name: str = Field(description="TrainJob (and JobSet) name: a DNS-1035 label, see job_name()")
    namespace: str
    image: str = Field(description="CUDA + DeepSpeed image with homegrown installed")
    data_uri: str = Field(description="tokenizer manifest.json, passed as --data")
    output_uri: str = Field(description="passed as --output; the worker writes result.json there")
    config_uri: str = Field(description='{"train": ..., "model": ...} JSON readable from the nodes, --config')
    num_nodes: int = 1
    nproc_per_node: int = Field(1, description="ranks per node; must equal gpus_per_node when it is > 0")
    gpus_per_node: int = Field(0, description="0 = CPU ranks (gloo)")
    accelerator_type: str = Field("nvidia.com/gpu", description="extended resource name of the GPUs")
    cpu: str | None = Field(None, description="CPU request = limit per node, e.g. '32'")
    memory: str | None = Field(None, description="memory request = limit per node, e.g. '256Gi'")
    runtime: str = Field("torch-distributed", description="name of the training runtime to reference")
    runtime_kind: Literal["ClusterTrainingRuntime", "TrainingRuntime"] = "ClusterTrainingRuntime"
    command: list[str] = Field(default_factory=lambda: list(WORKER_COMMAND), description="trainer command")
    env: dict[str, str] = Field(default_factory=dict, description="e.g. MLFLOW_TRACKING_URI, MLFLOW_RUN_ID")
    secret_env: list[SecretEnv] = Field(default_factory=list)
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    volumes: list[PvcMount] = Field(default_factory=list)
    service_account: str | None = None
    labels: dict[str, str] = Field(default_factory=dict, description="on the TrainJob and its pods")
    annotations: dict[str, str] = Field(default_factory=dict, description="on the TrainJob and its pods")
    active_deadline_s: int | None = Field(None, description="the Trainer fails the job after this long")
    preemption_grace_s: int | None = Field(
        None, ge=1, description="SIGTERM to SIGKILL for the ranks (torchrun's shutdown timeout); the pods get "
        f"{GRACE_MARGIN_S} s more as terminationGracePeriodSeconds, for torchrun itself to finish",
    )  # fmt: skip
    owner: OwnerPod | None = Field(
        None, description="the launcher's pod, set as the TrainJob's ownerReference when it is in the TrainJob's "
        "namespace (else skipped, with a printed note); None: the TrainJob outlives a killed launcher until "
        "delete_unfinished or kubectl removes it",
    )  # fmt: skip

    @property
    def args(self) -> list[str]:
        return ["--data", self.data_uri, "--output", self.output_uri, "--config", self.config_uri]


class TrainJobSpecError(ValueError):
    """The spec cannot make a valid TrainJob; the message names each key and what to change."""


def pod_name_room(num_nodes: int) -> int:
    """The longest TrainJob name whose pods' names still fit (`-node-0-<last index>-xxxxx`)."""
    return POD_NAME_MAX - len(f"-{NODE}-0-{max(num_nodes, 1) - 1}-abcde")


def job_name(run_name: str, num_nodes: int = 1, suffix: str | None = None) -> str:
    """A valid TrainJob name from a run name: lowercased, sanitised, truncated to fit its pods'
    names, plus a random suffix (None) so a retried step never collides with its predecessor."""
    if suffix is None:
        suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    base = re.sub(r"[^a-z0-9-]+", "-", run_name.lower()).strip("-")
    base = re.sub(r"-{2,}", "-", base)
    if not base or not base[0].isalpha():
        base = "train-" + base
    room = pod_name_room(num_nodes) - (len(suffix) + 1 if suffix else 0)
    base = base[:room].rstrip("-")
    return f"{base}-{suffix}" if suffix else base


def check_spec(spec: TrainJobSpec) -> None:
    """Every problem at once, each naming its key and what to change."""
    problems: list[str] = []

    def bad(key: str, why: str) -> None:
        problems.append(f"  {key}: {why}")

    if spec.num_nodes < 1:
        bad("num_nodes", f"must be >= 1 (got {spec.num_nodes})")
    if spec.nproc_per_node < 1:
        bad("nproc_per_node", f"must be >= 1 (got {spec.nproc_per_node})")
    if spec.gpus_per_node < 0:
        bad("gpus_per_node", f"must be >= 0 (got {spec.gpus_per_node})")
    elif spec.gpus_per_node and spec.nproc_per_node != spec.gpus_per_node:
        bad("nproc_per_node", f"({spec.nproc_per_node}) must equal gpus_per_node ({spec.gpus_per_node}): "
            "torchrun starts one rank per GPU; set train.nproc_per_node to the GPUs per node")  # fmt: skip
    room = pod_name_room(spec.num_nodes)
    if not DNS1035.match(spec.name):
        bad("name", f"{spec.name!r} is not a DNS-1035 label (a-z, 0-9, '-', starting with a letter): "
            "build it with job_name(run_name, num_nodes)")  # fmt: skip
    elif len(spec.name) > room:
        bad("name", f"{spec.name!r} is {len(spec.name)} characters; with {spec.num_nodes} nodes its pod names "
            f"need it <= {room}: build it with job_name(run_name, num_nodes)")  # fmt: skip
    if not DNS1123_LABEL.match(spec.namespace) or len(spec.namespace) > 63:
        bad("namespace", f"{spec.namespace!r} is not a namespace name: set the namespace the TrainJob runs in")
    for key in ("image", "runtime", "data_uri", "output_uri", "config_uri", "accelerator_type"):
        if not getattr(spec, key).strip():
            bad(key, "must not be empty")
    if not spec.command:
        bad("command", f"must not be empty (default: {' '.join(WORKER_COMMAND)})")
    if spec.active_deadline_s is not None and spec.active_deadline_s < 1:
        bad("active_deadline_s", f"must be >= 1 or unset (got {spec.active_deadline_s})")

    env_names = list(spec.env) + [name for s in spec.secret_env for name in s.keys.values()]
    for name in sorted(set(env_names)):
        if name in RESERVED_ENV:
            bad(f"env.{name}", "is set by the torch runtime from num_nodes / nproc_per_node: remove it")
        if env_names.count(name) > 1:
            bad(f"env.{name}", "is set more than once (env and secret_env): keep one")
        if not name or "=" in name:
            bad(f"env.{name}", "is not an environment variable name")
    for i, t in enumerate(spec.tolerations):
        if t.operator == "Exists" and t.value:
            bad(f"tolerations[{i}].value", "must be empty when operator is Exists (or use operator: Equal)")
        if t.operator == "Equal" and not t.key:
            bad(f"tolerations[{i}].key", "is required when operator is Equal")
    paths = [v.mount_path for v in spec.volumes]
    for i, v in enumerate(spec.volumes):
        if not v.mount_path.startswith("/"):
            bad(f"volumes[{i}].mount_path", f"{v.mount_path!r} must be an absolute path")
        elif paths.count(v.mount_path) > 1:
            bad(f"volumes[{i}].mount_path", f"{v.mount_path!r} is mounted twice")
    for key, value in spec.labels.items():
        if not LABEL_VALUE.match(value) or len(value) > 63:
            bad(f"labels.{key}", f"{value!r} is not a label value (<= 63 of A-Z a-z 0-9 - _ .): use an annotation")
    if spec.owner is not None:
        if not DNS1123_SUBDOMAIN.match(spec.owner.name) or len(spec.owner.name) > 253:
            bad("owner.name", f"{spec.owner.name!r} is not a pod name: set {POD_NAME_ENV} from the pod's metadata.name")
        try:
            uuid.UUID(spec.owner.uid)
        except ValueError:
            bad("owner.uid", f"{spec.owner.uid!r} is not a pod uid (a UUID): set {POD_UID_ENV} from the pod's "
                "metadata.uid; a wrong uid gets the TrainJob garbage-collected at once")  # fmt: skip
    if problems:
        raise TrainJobSpecError(f"TrainJob {spec.namespace}/{spec.name}: invalid spec\n" + "\n".join(problems))


def _quantities(spec: TrainJobSpec) -> dict[str, m.IoK8sApimachineryPkgApiResourceQuantity]:
    wanted = {spec.accelerator_type: str(spec.gpus_per_node) if spec.gpus_per_node else None,
              "cpu": spec.cpu, "memory": spec.memory}  # fmt: skip
    return {k: m.IoK8sApimachineryPkgApiResourceQuantity(v) for k, v in wanted.items() if v}


def _env(spec: TrainJobSpec) -> list[m.IoK8sApiCoreV1EnvVar]:
    # Print as it happens (the log is streamed); CPU ranks need DeepSpeed's CPU accelerator and
    # one thread each, as in the local launcher. The caller's env wins.
    defaults = {"PYTHONUNBUFFERED": "1"}
    if spec.preemption_grace_s:
        defaults["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] = str(spec.preemption_grace_s)  # torchrun's --shutdown-timeout
    if not spec.gpus_per_node:
        defaults |= {"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    env = [m.IoK8sApiCoreV1EnvVar(name=k, value=v) for k, v in (defaults | spec.env).items()]
    for secret in spec.secret_env:
        for key, name in secret.keys.items():
            ref = m.IoK8sApiCoreV1SecretKeySelector(name=secret.secret_name, key=key)
            env.append(m.IoK8sApiCoreV1EnvVar(name=name, value_from=m.IoK8sApiCoreV1EnvVarSource(secret_key_ref=ref)))
    return env


def _runtime_patch(spec: TrainJobSpec) -> m.TrainerV1alpha1RuntimePatch | None:
    """The pod settings `spec.trainer` has no field for, as a patch of the runtime's `node` job."""
    volumes = [
        m.IoK8sApiCoreV1Volume(
            name=f"pvc-{i}",
            persistent_volume_claim=m.IoK8sApiCoreV1PersistentVolumeClaimVolumeSource(
                claim_name=v.claim_name, read_only=v.read_only or None
            ),
        )
        for i, v in enumerate(spec.volumes)
    ]
    mounts = [
        m.IoK8sApiCoreV1VolumeMount(name=f"pvc-{i}", mount_path=v.mount_path, read_only=v.read_only or None)
        for i, v in enumerate(spec.volumes)
    ]
    pod_spec = m.TrainerV1alpha1PodSpecPatch(
        service_account_name=spec.service_account,
        termination_grace_period_seconds=spec.preemption_grace_s + GRACE_MARGIN_S if spec.preemption_grace_s else None,
        node_selector=spec.node_selector or None,
        tolerations=[m.IoK8sApiCoreV1Toleration(**t.model_dump(exclude_none=True)) for t in spec.tolerations] or None,
        volumes=volumes or None,
        # env can't be patched on the `node` container (it goes in spec.trainer.env); mounts can
        containers=[m.TrainerV1alpha1ContainerPatch(name=NODE, volume_mounts=mounts)] if mounts else None,
    )
    pod_meta = m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
        labels=spec.labels or None, annotations=spec.annotations or None
    )
    no_spec, no_meta = pod_spec == m.TrainerV1alpha1PodSpecPatch(), not (spec.labels or spec.annotations)
    if no_spec and no_meta:
        return None
    pod = m.TrainerV1alpha1PodTemplatePatch(metadata=None if no_meta else pod_meta, spec=None if no_spec else pod_spec)
    job = m.TrainerV1alpha1ReplicatedJobPatch(
        name=NODE, template=m.TrainerV1alpha1JobTemplatePatch(spec=m.TrainerV1alpha1JobSpecPatch(template=pod))
    )
    jobset = m.TrainerV1alpha1JobSetTemplatePatch(spec=m.TrainerV1alpha1JobSetSpecPatch(replicated_jobs=[job]))
    return m.TrainerV1alpha1RuntimePatch(
        manager=PATCH_MANAGER, training_runtime_spec=m.TrainerV1alpha1TrainingRuntimeSpecPatch(template=jobset)
    )


def pod_namespace(path: Path = SERVICE_ACCOUNT_NAMESPACE) -> str | None:
    """This pod's namespace (its service account's, mounted with the API token); None outside a pod."""
    return (path.read_text().strip() or None) if path.is_file() else None


def owner_from_env(environ: Mapping[str, str], namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> OwnerPod | None:
    """The launcher's pod from POD_NAME_ENV / POD_UID_ENV (downward API) and its namespace from
    `namespace_file`; None when neither variable is set (not started by the pipeline). Raises
    TrainJobSpecError when only one is set: the task's env wiring is incomplete."""
    name, uid = environ.get(POD_NAME_ENV, ""), environ.get(POD_UID_ENV, "")
    if not name and not uid:
        return None
    if not (name and uid):
        missing = POD_UID_ENV if name else POD_NAME_ENV
        raise TrainJobSpecError(f"{missing} is not set but {POD_NAME_ENV if name else POD_UID_ENV} is: set both "
                                "on the train task from the pod's metadata.name and metadata.uid")  # fmt: skip
    return OwnerPod(name=name, uid=uid, namespace=pod_namespace(namespace_file))


OwnerReference = m.IoK8sApimachineryPkgApisMetaV1OwnerReference


def _owner_references(spec: TrainJobSpec, log: Callable[[str], None]) -> list[OwnerReference] | None:
    owner = spec.owner
    if owner is None:
        return None
    if owner.namespace != spec.namespace:
        # Owners cannot cross namespaces: the garbage collector would treat this one as absent and
        # delete the TrainJob as soon as it is created.
        where = f"in namespace {owner.namespace}" if owner.namespace else "in an unknown namespace"
        log(f"[trainjob] note: no ownerReference to pod {owner.name}: it is {where}, the TrainJob in "
            f"{spec.namespace}; if this launcher is killed, only the exit handler's delete_unfinished "
            "removes the TrainJob")  # fmt: skip
        return None
    # controller=false: the pod does not reconcile the TrainJob, and a controller reference would make
    # tools that follow "Controlled By" (Kueue's parent-workload check) treat the job as a pod's child.
    # blockOwnerDeletion=false: true would only make a foreground delete of the pod wait for the
    # TrainJob, and under the OwnerReferencesPermissionEnforcement admission plugin it needs update on
    # pods/finalizers, which the steps' Role does not grant. Setting ownerReferences at all needs
    # delete on trainjobs there, which it does.
    return [OwnerReference(api_version="v1", kind="Pod", name=owner.name, uid=owner.uid, controller=False,
                           block_owner_deletion=False)]  # fmt: skip


def build_trainjob(spec: TrainJobSpec, log: Callable[[str], None] = print) -> m.TrainerV1alpha1TrainJob:
    """The TrainJob object (the Trainer API's own models); `.to_dict()` is the request body.
    Raises TrainJobSpecError (check_spec); `log` gets the note when the owner pod is skipped."""
    check_spec(spec)
    quantities = _quantities(spec)
    trainer = m.TrainerV1alpha1Trainer(
        image=spec.image,
        command=list(spec.command),
        args=spec.args,
        env=_env(spec),
        num_nodes=spec.num_nodes,
        # an int, not "auto": auto would start one rank per CPU core on CPU nodes
        num_proc_per_node=spec.nproc_per_node,
        resources_per_node=m.IoK8sApiCoreV1ResourceRequirements(requests=quantities, limits=quantities)
        if quantities
        else None,
    )
    patch = _runtime_patch(spec)
    return m.TrainerV1alpha1TrainJob(
        api_version=f"{GROUP}/{VERSION}",
        kind="TrainJob",
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=spec.name,
            namespace=spec.namespace,
            labels=spec.labels or None,
            annotations=spec.annotations or None,
            owner_references=_owner_references(spec, log),
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtime_ref=m.TrainerV1alpha1RuntimeRef(name=spec.runtime, kind=spec.runtime_kind, api_group=GROUP),
            trainer=trainer,
            runtime_patches=[patch] if patch else None,
            active_deadline_seconds=spec.active_deadline_s,
        ),
    )

