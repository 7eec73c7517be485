"""Everything only a cluster run has, in one place: the Kubernetes settings a compiled pipeline
gets (`apply_cluster_settings`), the multi-node train step's TrainJob (`train_on_trainjob`),
which the exit handler cleans up after (`delete_unfinished_trainjobs`), and the deploy step's
KServe InferenceService (`inference_service_spec`).

Local and cluster runs share the DAG and the steps; a local run never reaches this module's
Kubernetes side (kfp's local runner ignores the settings, and it trains with torchrun).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from components import storage
from pipelines.config import ClusterConfig, ConfigError, RunConfig

if TYPE_CHECKING:
    from kfp import dsl

    from components.serve import inference_service as serving
    from components.train import trainjob
    from components.train.result import TrainResult

# What the steps get from the chart's ConfigMap, forwarded to the TrainJob's pods by value.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
                 "MLFLOW_EXPERIMENT_NAME", "HF_HUB_OFFLINE", "HOMEGROWN_S3_RETRY_S", "AWS_RETRY_MODE",
                 "AWS_MAX_ATTEMPTS")  # fmt: skip
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
LABEL_MAX = 63


def check_images(cluster: ClusterConfig) -> None:
    """Raises ConfigError when an image the cluster needs is not set: homegrown publishes none, and
    a default naming a registry namespace we do not own could run someone else's image with the
    run's MLflow and S3 credentials."""
    missing = [key for key, needed in (("image", True), ("train_image", cluster.gpus > 0)) if needed and not getattr(cluster, key)]
    if missing:
        raise ConfigError(
            f"cluster.{' and cluster.'.join(missing)} not set: build the images from docker/ (make images), push them to "
            "your registry and set them, e.g. cluster.image: registry.example.com/ml/homegrown-steps:0.1.0 (pin with "
            "@sha256:... to be sure what runs); the chart's steps ConfigMap (cluster.yaml) holds the ones it was given"
        )


def apply_cluster_settings(cluster: ClusterConfig, tasks: list, *trains: dsl.PipelineTask,
                           evaluate: dsl.PipelineTask | None = None) -> None:
    """Images, env from ConfigMap/Secrets, volumes, retries, and the train steps' (pretraining,
    instruction tuning) GPUs and placement; `evaluate` (when it should run on a GPU) gets the
    trainer image, one GPU and the train steps' tolerations and node selector.

    With cluster.train_nodes > 1 the train step only launches and watches a TrainJob: it runs on
    the CPU image with no GPUs (the run's ServiceAccount needs the TrainJob rights), gets its pod's
    name and uid as env (the TrainJob's owner), and the GPU settings go to the TrainJob's nodes.
    """
    from kfp import kubernetes  # compile time only: a running task (the train step) has no pipeline SDK

    check_images(cluster)
    multi_node = cluster.train_nodes > 1
    for task in tasks:
        on_gpu = any(task is t for t in trains) and not multi_node or (task is evaluate and cluster.gpus > 0)
        task.set_container_image((cluster.train_image if cluster.gpus > 0 else cluster.image) if on_gpu else cluster.image)
        if cluster.config_map:
            kubernetes.use_config_map_as_env(
                task, cluster.config_map,
                {"MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL"},
            )  # fmt: skip
        for secret in cluster.secrets:
            kubernetes.use_secret_as_env(task, secret.secret_name, dict(secret.keys))
        if cluster.data_pvc:
            kubernetes.mount_pvc(task, cluster.data_pvc, mount_path="/data")
    for task in tasks:
        # register is idempotent (a version per weights digest), so it is retried like the rest
        if cluster.retries and task.component_spec.name not in ("start-op", "finish-op"):
            task.set_retry(cluster.retries, backoff_duration="60s", backoff_factor=2)
    for train in trains:
        _train_placement(cluster, train)
    if evaluate is not None and cluster.gpus:
        evaluate.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(1)
        _node_placement(cluster, evaluate)


def _train_placement(cluster: ClusterConfig, train: dsl.PipelineTask) -> None:
    """A train step's TrainJob identity (multi-node) or GPUs, CPU, memory and node placement."""
    from kfp import kubernetes

    if cluster.train_nodes > 1:
        from components.train.trainjob import POD_NAME_ENV, POD_UID_ENV

        # the launcher pod's identity (downward API): the TrainJob's ownerReference
        kubernetes.use_field_path_as_env(train, POD_NAME_ENV, "metadata.name")
        kubernetes.use_field_path_as_env(train, POD_UID_ENV, "metadata.uid")
        return
    if cluster.gpus:
        train.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(cluster.gpus)
    if cluster.train_cpu:
        train.set_cpu_request(cluster.train_cpu).set_cpu_limit(cluster.train_cpu)
    if cluster.train_memory:
        train.set_memory_request(cluster.train_memory).set_memory_limit(cluster.train_memory)
    _node_placement(cluster, train)


def _node_placement(cluster: ClusterConfig, task: dsl.PipelineTask) -> None:
    """The GPU nodes' tolerations and node selector on a task."""
    from kfp import kubernetes

    for tol in cluster.tolerations:
        kubernetes.add_toleration(task, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(task, key, value)


# ---- the multi-node train step: a TrainJob ----------------------------------------------------


def namespace(cluster: ClusterConfig) -> str:
    """Where TrainJobs go: cluster.namespace, else the namespace of the pod this runs in.
    Raises ValueError outside a pod when cluster.namespace is not set."""
    found = cluster.namespace or (
        SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.is_file() else None
    )
    if not found:
        raise ValueError("cluster.namespace is not set and this step does not run in a pod: set cluster.namespace")
    return found


def run_label(run_name: str) -> str:
    """The pipeline run's name as a label value (<= 63 characters of [A-Za-z0-9-_.], alphanumeric
    at both ends): unchanged when it is one, else cleaned, cut and suffixed with 8 hex digits of
    its sha256 so that two long names stay apart. The train and finish steps both use it."""
    from components.train.trainjob import LABEL_VALUE

    if len(run_name) <= LABEL_MAX and LABEL_VALUE.match(run_name):
        return run_name
    digest = hashlib.sha256(run_name.encode()).hexdigest()[:8]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", run_name)[: LABEL_MAX - len(digest) - 1]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    return f"{cleaned}-{digest}" if cleaned else digest


def trainjob_spec(config: RunConfig, packed_manifest_uri: str, output_uri: str, config_uri: str,
                  env: dict[str, str], environ: Mapping[str, str] | None = None,
                  run_name: str = "") -> trainjob.TrainJobSpec:  # fmt: skip
    """The TrainJob of a multi-node train step: the cluster settings the single-node step gets,
    the ConfigMap's env by value (FORWARDED_ENV from `environ`, default os.environ), the launcher
    pod as its owner (trainjob.owner_from_env) and, given `run_name`, the pipeline run's label
    (trainjob.RUN_LABEL) the exit handler deletes by. Raises ValueError without a namespace."""
    from components.train import trainjob

    cluster = config.cluster
    environ = os.environ if environ is None else environ
    run_label_mlflow = env.get("MLFLOW_RUN_ID") or config.name  # the train step's MLflow run
    labels = {"app.kubernetes.io/part-of": "homegrown", "homegrown/run": run_label_mlflow[:LABEL_MAX]}
    if run_name:
        labels[trainjob.RUN_LABEL] = run_label(run_name)
    return trainjob.TrainJobSpec(
        name=trainjob.job_name(config.name, cluster.train_nodes),
        namespace=namespace(cluster),
        image=cluster.train_image or cluster.image,
        data_uri=packed_manifest_uri,
        output_uri=output_uri,
        config_uri=config_uri,
        num_nodes=cluster.train_nodes,
        nproc_per_node=config.train.nproc_per_node,
        gpus_per_node=cluster.gpus,
        accelerator_type=cluster.accelerator_type,
        cpu=cluster.train_cpu,
        memory=cluster.train_memory,
        runtime=cluster.train_runtime,
        env={**{k: environ[k] for k in FORWARDED_ENV if environ.get(k)}, **env},
        secret_env=cluster.secrets,
        tolerations=cluster.tolerations,
        node_selector=cluster.node_selector,
        volumes=[trainjob.PvcMount(claim_name=cluster.data_pvc, mount_path="/data")] if cluster.data_pvc else [],
        service_account=cluster.service_account,
        labels=labels,
        preemption_grace_s=config.train.preemption_grace_s,
        owner=trainjob.owner_from_env(environ, SERVICE_ACCOUNT_NAMESPACE),
    )


def train_on_trainjob(config: RunConfig, packed_manifest_uri: str, output_uri: str, env: dict[str, str],
                      run_name: str = "") -> TrainResult:
    """Write the worker's config beside its output, run the TrainJob, read its result.json.
    Raises trainjob_launch.TrainJobError (failed, timed out, refused) and what reading the result raises."""
    from components.train import trainjob_launch
    from components.train.result import TrainResult
    from components.train.run_config import write_worker_config

    config_uri = storage.join(output_uri, "train-config.json")
    write_worker_config(config_uri, config.train, config.model)
    trainjob_launch.launch(trainjob_spec(config, packed_manifest_uri, output_uri, config_uri, env, run_name=run_name))
    return TrainResult.model_validate_json(storage.read_text(storage.join(output_uri, "result.json")))


def delete_unfinished_trainjobs(config: RunConfig, run_name: str) -> list[str]:
    """For the exit handler: delete the pipeline run's TrainJobs that are neither Complete nor
    Failed (their launcher was killed before it could); returns their names. Raises ValueError
    without a namespace, trainjob_launch.TrainJobError without Kubernetes credentials."""
    from components.train import trainjob, trainjob_launch

    return trainjob_launch.delete_unfinished(namespace(config.cluster), {trainjob.RUN_LABEL: run_label(run_name)})


# ---- the deploy step: a KServe InferenceService -------------------------------------------------


def serving_storage_uri(uri: str, cluster: ClusterConfig) -> str:
    """Where KServe's storage initializer reads the serving copy `uri`: an s3:// URI as it is; a path
    under /data (cluster.data_pvc mounted there) as pvc://<claim>/<path>. Raises ValueError for
    anything else (a local path no predictor pod can see)."""
    if storage.is_s3(uri):
        return uri
    path = Path(storage.local_path(uri))
    if cluster.data_pvc and path.is_absolute() and path.is_relative_to("/data"):
        return f"pvc://{cluster.data_pvc}/{path.relative_to('/data').as_posix()}"
    raise ValueError(f"serve: the serving copy {uri} is not on S3 or the data PVC, so KServe cannot read it: set "
                     "data_root to an s3:// URI (or /data/... with cluster.data_pvc)")  # fmt: skip


def inference_service_spec(config: RunConfig, version: str, storage_uri: str,
                           mlflow_run_id: str | None = None) -> serving.InferenceServiceSpec:  # fmt: skip
    """The InferenceService of the deploy step: `config.serve` (which must be set) for the endpoint,
    the cluster section for the GPU resource name, tolerations, node selector and (by default) the
    service account and namespace. The canary share is serve.canary (None: all traffic).
    Raises ValueError when serve is unset or no namespace is known."""
    from components.serve import inference_service as serving_module

    serve = config.serve
    if serve is None:
        raise ValueError("serve: not set in the run config: nothing to deploy")
    cluster = config.cluster
    found = serve.namespace or cluster.namespace or (
        SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.is_file() else None
    )
    if not found:
        raise ValueError("serve.namespace is not set and this step does not run in a pod: set serve.namespace")
    return serving_module.InferenceServiceSpec(
        name=serve.name or serving_module.isvc_name(config.registry.model_name),
        namespace=found,
        storage_uri=serving_storage_uri(storage_uri, cluster),
        model_name=config.registry.model_name,
        model_version=str(version),
        mlflow_run_id=mlflow_run_id,
        runtime=serve.runtime,
        backend=serve.backend,
        max_model_len=serve.max_model_len,
        args=list(serve.args),
        gpus=serve.gpus,
        accelerator_type=cluster.accelerator_type,
        cpu=serve.cpu,
        memory=serve.memory,
        min_replicas=serve.min_replicas,
        max_replicas=serve.max_replicas,
        canary_traffic_percent=serve.canary,
        tolerations=cluster.tolerations,
        node_selector=cluster.node_selector,
        service_account=serve.service_account or cluster.service_account,
    )
