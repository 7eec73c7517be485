"""The homegrown DAG: one definition, run locally by kfp's SubprocessRunner or compiled for KFP.

clean → tokenizer → train → evaluate → register → (gate passed) promote, wrapped in an
exit handler that closes the pipeline's MLflow parent run whatever happens.
Local and cluster differ only in `apply_cluster_settings`, applied at compile time.
"""

from typing import Callable, Literal

from kfp import dsl, kubernetes

from pipelines import ops
from pipelines.config import ClusterConfig, RunConfig

PIPELINE_NAME = "homegrown"
Target = Literal["local", "cluster"]


def build_pipeline(config: RunConfig, target: Target = "local") -> Callable:
    """The pipeline function, with the run config as the default of its `config_json` parameter."""
    default_config = config.model_dump_json()

    @dsl.pipeline(name="champion-gate", description="Promote the new version to champion when the gate passed.")
    def champion_gate(decision: str, version: str, config_json: str, tracking_uri: str, parent_run_id: str):
        # A sub-pipeline, so the condition reads its own input: kfp's local runner cannot resolve
        # a sibling task's output in a condition nested in the exit handler, and skips the branch.
        with dsl.If(decision == "passed", name="gate-passed"):
            promote = ops.promote_op(
                config_json=config_json, tracking_uri=tracking_uri, parent_run_id=parent_run_id, version=version
            )
            promote.set_display_name("promote to champion").set_caching_options(False)
            if target == "cluster":
                apply_cluster_settings(config.cluster, [promote])

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Clean a corpus, train a tokenizer, train a causal LM with DeepSpeed, evaluate, register.",
    )
    def homegrown(config_json: str = default_config, run_name: str = "", tracking_uri: str = "", data_root: str = ""):
        finish = ops.finish_op(
            config_json=config_json, run_name=run_name,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, tracking_uri=tracking_uri,
        )  # fmt: skip
        finish.set_display_name("close MLflow run")
        with dsl.ExitHandler(finish, name="homegrown-run"):
            start = ops.start_op(
                config_json=config_json, run_name=run_name, kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                tracking_uri=tracking_uri, data_root=data_root,
            )  # fmt: skip
            start.set_display_name("start MLflow run")
            common = dict(
                config_json=config_json, tracking_uri=tracking_uri, parent_run_id=start.outputs["parent_run_id"]
            )
            run_root = start.outputs["run_root"]
            # clean fans out over the corpus's shards: stages per shard → corpus-wide dedup → write per shard
            shards = ops.clean_plan_op(config_json=config_json, run_root=run_root).set_display_name("clean: shards")
            with dsl.ParallelFor(shards.output, parallelism=config.clean.parallel_shards, name="clean-stages") as item:
                prepare = ops.clean_shard_op(config_json=config_json, shard=item)
                prepare.set_display_name("clean: stages")
            dedup = ops.clean_dedup_op(config_json=config_json, run_root=run_root, shards=shards.output)
            dedup.after(prepare).set_display_name("clean: dedup")
            with dsl.ParallelFor(shards.output, parallelism=config.clean.parallel_shards, name="clean-write") as item:
                write = ops.clean_write_op(config_json=config_json, shard=item)
                write.after(dedup).set_display_name("clean: write")
            clean = ops.clean_collect_op(**common, run_root=run_root, shards=shards.output)
            clean.after(write).set_display_name("clean")
            tokenize = ops.tokenize_op(**common, run_root=run_root, documents=clean.outputs["documents"])
            tokenize.set_display_name("tokenizer")
            train = ops.train_op(**common, run_root=run_root, packed=tokenize.outputs["packed"])
            train.set_display_name("train")
            evaluate = ops.evaluate_op(
                **common, run_root=run_root, packed=tokenize.outputs["packed"], model=train.outputs["model"]
            ).set_display_name("evaluate")
            register = ops.register_op(
                **common, run_name=start.outputs["run_name"], documents=clean.outputs["documents"],
                packed=tokenize.outputs["packed"], model=train.outputs["model"], results=evaluate.outputs["results"],
            ).set_display_name("register")  # fmt: skip
            champion_gate(
                **common, decision=register.outputs["decision"], version=register.outputs["version"]
            ).set_display_name("champion gate")

        tasks = [finish, start, shards, prepare, dedup, write, clean, tokenize, train, evaluate, register]
        for task in (finish, start, register):
            task.set_caching_options(False)  # side effects in MLflow: never reuse a cached result
        if target == "cluster":
            apply_cluster_settings(config.cluster, tasks, train)

    return homegrown


def apply_cluster_settings(cluster: ClusterConfig, tasks: list, train: dsl.PipelineTask | None = None) -> None:
    """Images, env from ConfigMap/Secrets, volumes, and the train step's GPUs and placement.

    With cluster.train_nodes > 1 the train step only launches and watches a TrainJob: it runs on
    the CPU image with no GPUs (the run's ServiceAccount needs the TrainJob rights), and the GPU
    settings go to the TrainJob's nodes instead.
    """
    multi_node = cluster.train_nodes > 1
    for task in tasks:
        task.set_container_image(cluster.train_image if task is train and not multi_node else cluster.image)
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
    if train is None:
        return
    if multi_node:
        return
    if cluster.gpus:
        train.set_accelerator_type(cluster.accelerator_type).set_accelerator_limit(cluster.gpus)
    if cluster.train_cpu:
        train.set_cpu_request(cluster.train_cpu).set_cpu_limit(cluster.train_cpu)
    if cluster.train_memory:
        train.set_memory_request(cluster.train_memory).set_memory_limit(cluster.train_memory)
    for tol in cluster.tolerations:
        kubernetes.add_toleration(train, key=tol.key, operator=tol.operator, value=tol.value, effect=tol.effect)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(train, key, value)


def compile_pipeline(config: RunConfig, output: str) -> None:
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(config, "cluster"), output)
