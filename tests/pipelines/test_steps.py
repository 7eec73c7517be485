"""The step plumbing: a StepResult written into KFP outputs once, the train step's artifact read
back by the steps after it, the step modules inside a running KFP task, and the CLI's step
commands built from the step modules."""

import math
import os
import subprocess
import sys

from kfp.dsl import Dataset, Metrics, Model

from components import shards
from components.manifest import Manifest, shard_info
from components.train.result import TrainResult
from pipelines import cli, dag
from pipelines.steps import clean, common, evaluate, register, sft_data, sft_tokenize, tokenizer, train


def test_publish_writes_each_output_its_metadata_and_the_metrics(tmp_path, capsys):
    uri = str(tmp_path / "docs" / "part-00000.jsonl.gz")
    records = shards.write_documents(uri, [shards.Document(id="a", text="Hello."), shards.Document(id="b", text="Hi.")])
    Manifest(kind="documents", root=str(tmp_path / "docs"), shards=[shard_info(uri, records)]).save(
        str(tmp_path / "docs" / "manifest.json"))  # fmt: skip
    output = common.manifest_output(str(tmp_path / "docs" / "manifest.json"))
    result = common.StepResult(None, "clean: 2 documents in", {"kept": 2, "kept_lang_sr@latin": 1},
                               outputs={"documents": output})  # fmt: skip
    documents, metrics = Dataset(uri="", metadata={}), Metrics(uri="", metadata={})
    documents.path = str(tmp_path / "kfp" / "documents")  # where KFP would have the task write it

    common.publish(result, metrics, documents=documents)

    manifest = Manifest.load(str(tmp_path / "docs" / "manifest.json"))
    assert (tmp_path / "kfp" / "documents").read_text() == (tmp_path / "docs" / "manifest.json").read_text()
    assert documents.metadata == {"digest": manifest.digest, "records": 2, "shards": 1, "root": str(tmp_path / "docs")}
    assert metrics.metadata == {"kept": 2.0, "kept_lang_sr_latin-88de67d8": 1.0}
    assert capsys.readouterr().out == "[homegrown] clean: 2 documents in\n"


def test_the_train_artifact_reads_back_a_diverged_run(tmp_path):
    result = TrainResult(
        final_loss=math.nan, losses=[3.0, math.nan], steps=2, tokens=256, tokens_per_s=10.0, steps_per_s=1.0,
        world_size=2, zero_stage=2, precision="fp32", parameters=1000, tokens_per_step=128,
        fixed_batch_loss_engine=3.1, fixed_batch_loss_consolidated=3.1, checkpoint_uri="/r/train/checkpoints",
        checkpoint_tag="step-2", model_uri="/r/train/model", data_digest="d", duration_s=2.0,
    )  # fmt: skip
    model = Model(uri="", metadata={})
    model.path = str(tmp_path / "model")
    common.publish(common.StepResult(result, "train", outputs={"model": train.model_output(result)}), model=model)

    again = train.read_model(model.path)
    assert math.isnan(again.final_loss) and again.losses[0] == 3.0 and math.isnan(again.losses[1])
    assert again.model_dump(exclude={"final_loss", "losses"}) == result.model_dump(exclude={"final_loss", "losses"})
    assert model.metadata == {"model_uri": "/r/train/model", "checkpoint_uri": "/r/train/checkpoints",
                              "framework": "transformers", "format": "safetensors"}  # fmt: skip


def test_the_step_commands_come_from_the_step_modules_in_dag_order():
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    steps = [clean, tokenizer, train, sft_data, sft_tokenize, evaluate, register]
    assert [name for name in sub.choices if name in {m.COMMAND.name for m in steps}] == [
        "clean", "tokenize", "train", "sft-data", "sft-tokenize", "evaluate", "register"]  # fmt: skip
    for module in steps:
        assert sub.choices[module.COMMAND.name].get_default("func") is module.COMMAND.handler
    assert [m for m in dag.STEPS if getattr(m, "COMMAND", None)] == steps


def test_the_step_modules_and_the_cluster_wiring_import_inside_a_running_task():
    # A task's body imports its step module where the SDK runs in runtime mode: no decorators, no
    # pipeline objects. The finish step and the multi-node train step reach pipelines.cluster there.
    code = (
        "import kfp.dsl\n"
        "assert not hasattr(kfp.dsl, 'component')\n"
        "from pipelines import cluster\n"
        "from pipelines.steps import clean, evaluate, finish, promote, register, sft_data, sft_tokenize, start, "
        "tokenizer, train\n"
        "assert clean.clean_filter_op.__name__ == 'clean_filter_op' and not hasattr(train.train_op, 'component_spec')\n"
        "assert cluster.run_label('nightly 7') == 'nightly-7-' + __import__('hashlib').sha256(b'nightly 7').hexdigest()[:8]\n"
    )  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "_KFP_RUNTIME": "true"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
