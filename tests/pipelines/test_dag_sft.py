"""Where the DAG goes is chosen by the config: pretraining, pretraining then instruction tuning
(SFT), or SFT of model.base. Compiled for a cluster and read back as KFP's YAML."""

import json
from pathlib import Path

import pytest
import yaml

from pipelines.config import ConfigError, load_config, parse_config
from pipelines.dag import compile_pipeline

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
CHATML = ["<|im_start|>", "<|im_end|>"]
SFT_TRAIN = {"nproc_per_node": 8, "micro_batch_size": 4, "global_batch_size": 64}


def compiled(config, tmp_path: Path) -> tuple[dict, dict]:
    out = tmp_path / "pipeline.yaml"
    compile_pipeline(config, str(out))
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform


def gpu_config(**changes):
    data = load_config(CONFIGS / "gpu.yaml").model_dump(mode="json")
    for key, value in changes.items():
        data[key] = value
    return parse_config(data)


def handler_tasks(spec: dict) -> dict:
    return spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]


def producer(task: dict, artifact: str) -> str:
    return task["inputs"]["artifacts"][artifact]["taskOutputArtifact"]["producerTask"]


def test_pretrain_then_sft_chains_the_pretrained_model_into_instruction_tuning(tmp_path):
    config = gpu_config(sft={"data": "s3://homegrown-data/chat/", "seq_len": 1024, "train": SFT_TRAIN},
                        tokenizer={**load_config(CONFIGS / "gpu.yaml").tokenizer.model_dump(), "special_tokens": CHATML})
    assert config.stages == ("pretrain", "sft")
    spec, platform = compiled(config, tmp_path)
    tasks = handler_tasks(spec)
    assert {"clean-collect-op", "tokenize-op", "train-op", "sft-data-op", "sft-tokenize-op", "train-op-2",
            "evaluate-op", "register-op", "champion-gate"} <= set(tasks)
    assert "sft-tokenize-base-op" not in tasks
    # sft-tokenize reads the pretrained model; the second train step trains on its rows, stage sft
    assert producer(tasks["sft-tokenize-op"], "base") == "train-op"
    assert producer(tasks["sft-tokenize-op"], "conversations") == "sft-data-op"
    assert producer(tasks["train-op-2"], "packed") == "sft-tokenize-op"
    assert tasks["train-op-2"]["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] == "sft"
    assert "stage" not in tasks["train-op"]["inputs"].get("parameters", {}) or (
        tasks["train-op"]["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] == "pretrain")
    # the tuned model is what is evaluated and registered, with the conversations as its data
    assert producer(tasks["evaluate-op"], "model") == "train-op-2"
    assert producer(tasks["evaluate-op"], "packed") == "sft-tokenize-op"
    assert producer(tasks["register-op"], "model") == "train-op-2"
    assert producer(tasks["register-op"], "documents") == "sft-data-op"
    # sft-data needs nothing upstream but the MLflow run: it runs alongside pretraining
    assert set(tasks["sft-data-op"].get("dependentTasks", [])) == {"start-op"}
    # both train steps get the GPUs, the trainer image and the placement
    executors = spec["deploymentSpec"]["executors"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-train-op", "exec-train-op-2"):
        assert executors[name]["container"]["image"] == "registry.example.com/ml/homegrown-trainer:0.1.0"
        assert executors[name]["container"]["resources"]["accelerator"]["resourceCount"] == "8"
        assert k8s[name]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert executors["exec-sft-tokenize-op"]["container"]["image"] == "registry.example.com/ml/homegrown-steps:0.1.0"
    # evaluate scores and generates with the tuned model: one GPU on the GPU nodes
    evaluate = executors["exec-evaluate-op"]["container"]
    assert evaluate["image"] == "registry.example.com/ml/homegrown-trainer:0.1.0" and evaluate["resources"]["accelerator"]["resourceCount"] == "1"
    assert k8s["exec-evaluate-op"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "accelerator" not in json.dumps(executors["exec-register-op"])


def test_sft_of_a_base_runs_no_pretraining(tmp_path):
    gpu = load_config(CONFIGS / "gpu.yaml")
    config = gpu_config(corpus=None, model={"base": "models:/homegrown@champion"}, train={},
                        sft={"data": "s3://homegrown-data/chat/", "train": SFT_TRAIN})  # fmt: skip
    assert config.stages == ("sft",)
    assert gpu.stages == ("pretrain",)
    spec, _ = compiled(config, tmp_path)
    tasks = handler_tasks(spec)
    assert not {"clean-plan-op", "clean-collect-op", "tokenize-op", "sft-tokenize-op"} & set(tasks)
    assert not [name for name in tasks if name.startswith("for-loop")]
    assert {"sft-data-op", "sft-tokenize-base-op", "train-op", "evaluate-op", "register-op"} <= set(tasks)
    assert producer(tasks["train-op"], "packed") == "sft-tokenize-base-op"
    assert tasks["train-op"]["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] == "sft"
    default = json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"])
    assert default["corpus"] is None and default["model"]["base"] == "models:/homegrown@champion"


def test_the_sft_stage_trains_the_model_it_was_tokenised_for_with_its_own_settings():
    config = parse_config({"model": {"base": "models:/b@champion"},
                           "sft": {"data": "d", "train": {"max_steps": 7}, "lora": {"r": 4}}})  # fmt: skip
    stage = config.sft_stage("s3://bucket/run/train/model")
    assert stage.model.base == "s3://bucket/run/train/model" and stage.model.lora.r == 4
    assert (stage.train.max_steps, stage.train.learning_rate, stage.train.warmup_steps) == (7, 1e-4, 10)
    assert config.train.max_steps == 200  # the pretraining settings are untouched
    assert parse_config({"model": {"base": "b"}, "sft": {"data": "d"}}).sft.train.learning_rate == 1e-4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "corpus: required"),
        ({"sft": {"data": "d"}}, "sft without a corpus tunes model.base"),
        ({"sft": {"data": "d"}, "model": {"base": "b", "lora": {}}}, "the SFT stage's adapters are sft.lora"),
        ({"sft": {"data": "d"}, "model": {"base": "b"}, "train": {"max_steps": 3}}, "the SFT stage's settings are sft.train"),
        ({"corpus": "c", "sft": {"data": "d", "seq_len": 128}}, "tokenizer.special_tokens: ['<|im_start|>', '<|im_end|>']"),
        ({"corpus": "c", "sft": {"data": "d", "seq_len": 512}, "tokenizer": {"special_tokens": CHATML}},
         "sft.seq_len (512) exceeds the model's context length (256)"),
        ({"model": {"base": "b"}, "sft": {"data": "d", "train": {"micro_batch_size": 3}}},
         "sft.train.global_batch_size (32) must be a multiple of"),
    ],
)
def test_a_config_that_cannot_run_its_stages_is_refused_naming_the_key(data, message):
    with pytest.raises(ConfigError) as refused:
        parse_config(data)
    assert message in str(refused.value)
    assert "(got {" not in str(refused.value), "a check across sections does not repeat the whole config"


def test_evaluate_stays_on_the_cpu_image_when_asked(tmp_path):
    config = gpu_config(evaluate={**load_config(CONFIGS / "gpu.yaml").evaluate.model_dump(), "device": "cpu"})
    spec, _ = compiled(config, tmp_path)
    evaluate = spec["deploymentSpec"]["executors"]["exec-evaluate-op"]["container"]
    assert evaluate["image"] == "registry.example.com/ml/homegrown-steps:0.1.0" and "resources" not in evaluate


def test_a_chat_model_is_registered_under_its_own_name_unless_one_is_given():
    assert parse_config({"name": "kiswahili", "model": {"base": "b"}, "sft": {"data": "d"}}).registry.model_name \
        == "kiswahili-chat"
    given = parse_config({"model": {"base": "b"}, "sft": {"data": "d"}, "registry": {"model_name": "mine"}})
    assert given.registry.model_name == "mine"
    assert parse_config({"corpus": "c"}).registry.model_name == "homegrown-demo"


def test_the_chat_demo_config_is_sft_of_the_packaged_base():
    config = load_config(CONFIGS / "chat-demo.yaml")
    assert config.stages == ("sft",)
    assert config.model.base == "data/bases/smollm2-135m"
    assert config.registry.model_name != load_config(CONFIGS / "demo.yaml").registry.model_name
