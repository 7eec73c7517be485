"""The homegrown DAG: one definition, run locally by kfp's SubprocessRunner or compiled for KFP.

Pretraining (config.stages has "pretrain"): clean (plan → filter per work unit → exact dedup per
key-prefix partition → near dedup per band group → cluster → write per unit → collect) → tokenizer → train. Instruction tuning ("sft"): sft-data (alongside, it needs
nothing upstream) → sft-tokenize (for the pretrained model, or model.base when there is no
pretraining) → train (stage sft). Then evaluate the last model → register → (gate passed)
promote → (config.serve set) deploy as a KServe InferenceService, wrapped in an exit handler
(finish) that closes the pipeline's MLflow parent run whatever happens. Which stages run is
fixed when the pipeline is built from the config, so the compiled YAML holds only the tasks it
runs. Local and cluster differ only in pipelines.cluster.apply_cluster_settings, applied at
compile time.
"""

from typing import Callable, Literal

from kfp import dsl

from pipelines.cluster import apply_cluster_settings
from pipelines.config import RunConfig
from pipelines.steps import (
    clean, deploy, evaluate, finish, promote, register, sft_data, sft_tokenize, start, tokenizer, train,
)  # fmt: skip

PIPELINE_NAME = "homegrown"
Target = Literal["local", "cluster"]
# The steps in run order; the CLI adds a `homegrown <command>` for each one with a COMMAND.
STEPS = (start, clean, tokenizer, train, sft_data, sft_tokenize, evaluate, register, promote, deploy, finish)


def build_pipeline(config: RunConfig, target: Target = "local") -> Callable:
    """The pipeline function, with the run config as the default of its `config_json` parameter."""
    default_config = config.model_dump_json()

    @dsl.pipeline(name="champion-gate", description="Promote the new version to champion when the gate passed.")
    def champion_gate(decision: str, version: str, config_json: str, tracking_uri: str, parent_run_id: str,
                      data_root: str):  # fmt: skip
        # A sub-pipeline, so the condition reads its own input: kfp's local runner cannot resolve
        # a sibling task's output in a condition nested in the exit handler, and skips the branch.
        with dsl.If(decision == "passed", name="gate-passed"):
            promoted = promote.promote_op(
                config_json=config_json, tracking_uri=tracking_uri, parent_run_id=parent_run_id, version=version
            )
            promoted.set_display_name("promote to champion").set_caching_options(False)
            gated = [promoted]
            if config.serve is not None:
                deployed = deploy.deploy_op(
                    config_json=config_json, tracking_uri=tracking_uri, parent_run_id=parent_run_id,
                    version=version, data_root=data_root,
                )  # fmt: skip
                deployed.after(promoted).set_display_name("deploy (KServe)").set_caching_options(False)
                gated.append(deployed)
            if target == "cluster":
                apply_cluster_settings(config.cluster, gated)  # no GPU: the endpoint's pods have them

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Clean a corpus, train a tokenizer, train a causal LM with DeepSpeed, instruction-tune it, "
        "evaluate, register.",
    )
    def homegrown(config_json: str = default_config, run_name: str = "", tracking_uri: str = "", data_root: str = ""):
        finished = finish.finish_op(
            config_json=config_json, run_name=run_name,
            kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER, tracking_uri=tracking_uri,
        )  # fmt: skip
        finished.set_display_name("close MLflow run")
        with dsl.ExitHandler(finished, name="homegrown-run"):
            started = start.start_op(
                config_json=config_json, run_name=run_name, kfp_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                tracking_uri=tracking_uri, data_root=data_root,
            )  # fmt: skip
            started.set_display_name("start MLflow run")
            common = dict(
                config_json=config_json, tracking_uri=tracking_uri, parent_run_id=started.outputs["parent_run_id"]
            )
            run_root = started.outputs["run_root"]
            tasks, trainers = [finished, started], []
            if "pretrain" in config.stages:
                # clean fans out over clean.tasks work units: filter per unit → exact dedup per key-prefix
                # partition → near dedup per band group → cluster → write per unit; the loops iterate
                # over short lists of indices (the units' files are on storage)
                plan = clean.clean_plan_op(config_json=config_json, run_root=run_root).set_display_name("clean: plan")
                parallelism = config.clean.parallel_shards
                with dsl.ParallelFor(plan.output, parallelism=parallelism, name="clean-filter") as item:
                    filtered = clean.clean_filter_op(config_json=config_json, shard=item)
                    filtered.set_display_name("clean: filter")
                partitions = clean.clean_dedup_plan_op(config_json=config_json, run_root=run_root, stage="exact")
                partitions.set_display_name("clean: exact dedup plan")
                with dsl.ParallelFor(partitions.output, parallelism=parallelism, name="clean-exact") as item:
                    exact = clean.clean_exact_op(config_json=config_json, partition=item)
                    exact.after(filtered).set_display_name("clean: exact dedup")
                dedup = [plan, filtered, partitions, exact]
                clustered = clean.clean_cluster_op(config_json=config_json, run_root=run_root)
                if config.clean.near_dedup is not None:
                    groups = clean.clean_dedup_plan_op(config_json=config_json, run_root=run_root, stage="near")
                    groups.set_display_name("clean: near dedup plan")
                    with dsl.ParallelFor(groups.output, parallelism=parallelism, name="clean-near") as item:
                        near = clean.clean_near_op(config_json=config_json, group=item)
                        near.after(exact).set_display_name("clean: near dedup")
                    clustered.after(near)
                    dedup += [groups, near]
                clustered.after(exact).set_display_name("clean: cluster")
                with dsl.ParallelFor(plan.output, parallelism=parallelism, name="clean-write") as item:
                    written = clean.clean_write_op(config_json=config_json, shard=item)
                    written.after(clustered).set_display_name("clean: write")
                cleaned = clean.clean_collect_op(**common, run_root=run_root, shards=plan.output)
                cleaned.after(written).set_display_name("clean: collect")
                tokenized = tokenizer.tokenize_op(**common, run_root=run_root, documents=cleaned.outputs["documents"])
                tokenized.set_display_name("tokenizer")
                trained = train.train_op(
                    **common, run_root=run_root, run_name=started.outputs["run_name"],
                    packed=tokenized.outputs["packed"],
                ).set_display_name("train")  # fmt: skip
                data, packed = cleaned.outputs["documents"], tokenized.outputs["packed"]
                tasks += [*dedup, clustered, written, cleaned, tokenized, trained]
                trainers.append(trained)
            if "sft" in config.stages:
                conversations = sft_data.sft_data_op(**common, run_root=run_root).set_display_name("sft: data")
                if "pretrain" in config.stages:
                    sft_packed = sft_tokenize.sft_tokenize_op(
                        **common, run_root=run_root, conversations=conversations.outputs["conversations"],
                        base=trained.outputs["model"],
                    )  # fmt: skip
                else:
                    sft_packed = sft_tokenize.sft_tokenize_base_op(
                        **common, run_root=run_root, conversations=conversations.outputs["conversations"]
                    )
                sft_packed.set_display_name("sft: tokenize")
                trained = train.train_op(
                    **common, run_root=run_root, run_name=started.outputs["run_name"],
                    packed=sft_packed.outputs["packed"], stage="sft",
                ).set_display_name("sft: train")  # fmt: skip
                data, packed = conversations.outputs["conversations"], sft_packed.outputs["packed"]
                tasks += [conversations, sft_packed, trained]
                trainers.append(trained)
            evaluated = evaluate.evaluate_op(
                **common, run_root=run_root, packed=packed, model=trained.outputs["model"]
            ).set_display_name("evaluate")
            registered = register.register_op(
                **common, run_name=started.outputs["run_name"], documents=data, packed=packed,
                model=trained.outputs["model"], results=evaluated.outputs["results"],
            ).set_display_name("register")  # fmt: skip
            tasks += [evaluated, registered]
            champion_gate(
                **common, decision=registered.outputs["decision"], version=registered.outputs["version"],
                data_root=data_root,
            ).set_display_name("champion gate")

        for task in (finished, started, registered):
            task.set_caching_options(False)  # side effects in MLflow: never reuse a cached result
        if target == "cluster":
            # scoring and generating with a large model wants a GPU, as training does
            on_gpu = evaluated if config.evaluate.device != "cpu" else None
            apply_cluster_settings(config.cluster, tasks, *trainers, evaluate=on_gpu)

    return homegrown


def compile_pipeline(config: RunConfig, output: str) -> None:
    """Compile the pipeline for a cluster (its Kubernetes settings applied) to a YAML package."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(config, "cluster"), output)
