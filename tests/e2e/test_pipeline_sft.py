"""Instruction tuning through kfp's local runner, twice, asserted through the MLflow store.

Run 1 pretrains a tiny model from scratch (its tokenizer reserving the ChatML markers), then
instruction-tunes it on real multilingual dialogues nobody here wrote (chatterbot-corpus); the
chat model becomes champion and answers `{"messages": [...]}` through mlflow.pyfunc.
Run 2 is SFT only, of model.base = that champion (models:/...@champion), on the same data (so the
same frozen held-out conversations), forced worse: the gate fails and `champion` stays.
"""

import json
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines.chat_demo_data import dialogues
from pipelines.config import parse_config
from pipelines.demo_corpus import CHATTERBOT, fetch
from pipelines.local import run_local
from tests.conftest import REPO
from tests.e2e.test_pipeline_local import corpus_slice, nested_runs

from components.sft.template import CHATML_SPECIAL_TOKENS, DEFAULT_CHAT_TEMPLATE

pytestmark = pytest.mark.slow
DIALOGUES = 240


def chat_data(dest: Path) -> Path:
    """Every 25th chatterbot dialogue (all 28 languages' files, in order), as the chat demo writes them."""
    everything = list(dialogues(fetch(CHATTERBOT, REPO / ".cache" / "sources")))
    picked = everything[:: len(everything) // DIALOGUES][:DIALOGUES]
    for record in picked:
        record.pop("_unanswered", None)
    dest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return dest


def sft_section(data: Path, **train) -> dict:
    return {
        "data": str(data),
        "clean": {"eval_fraction": 0.1, "eval_min_conversations": 12, "eval_max_conversations": 12},
        "seq_len": 128,
        "train": {"max_steps": 20, "micro_batch_size": 4, "global_batch_size": 8, "warmup_steps": 2,
                  "learning_rate": 0.003, "log_every": 5, **train},
    }  # fmt: skip


def test_pretrain_then_sft_then_sft_of_the_champion_gated(demo_corpus, tmp_path, sqlite_uri, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    corpus = corpus_slice(demo_corpus, tmp_path / "corpus")
    data = chat_data(tmp_path / "chat.jsonl")
    client = MlflowClient(sqlite_uri)
    common = {"data_root": str(tmp_path / "data"), "mlflow": {"experiment": "e2e-chat"},
              "evaluate": {"prompts": ["The"], "max_new_tokens": 8}, "registry": {"model_name": "e2e-chat"}}  # fmt: skip

    first = run_local(parse_config({
        "name": "e2e-chat", "corpus": str(corpus), **common,
        "tokenizer": {"vocab_size": 600, "seq_len": 64, "eval_fraction": 0.1, "eval_max_documents": 20,
                      "special_tokens": list(CHATML_SPECIAL_TOKENS)},
        "model": {"architecture": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                  "max_position_embeddings": 128},
        "train": {"max_steps": 30, "micro_batch_size": 4, "global_batch_size": 8, "warmup_steps": 2,
                  "learning_rate": 0.01, "log_every": 10},
        "sft": sft_section(data),
    }), "e2e-chat-first", sqlite_uri, work_dir=tmp_path / "runs")  # fmt: skip
    assert first.status == "FINISHED"
    assert first.tags["homegrown.stages"] == "pretrain,sft"
    assert first.tags["homegrown.gate"] == "passed"
    steps = nested_runs(client, first.experiment_id, first.parent_run_id)
    assert set(steps) == {"clean", "tokenizer", "train", "sft-data", "sft-tokenize", "sft-train", "evaluate", "register"}
    sft_stats = steps["sft-data"].data.metrics
    assert sft_stats["records_in"] == DIALOGUES
    assert sft_stats["kept"] + sft_stats["dropped_total"] + sft_stats["quarantined_total"] == DIALOGUES
    assert sft_stats["eval_conversations"] == 12
    packed = steps["sft-tokenize"].data.metrics
    assert packed["records_in"] == sft_stats["train_conversations"]
    assert packed["labelled_tokens"] < packed["tokens"]  # only the assistant's tokens are learnt
    assert first.tags["homegrown.chat_template"] == "default"  # trained from scratch: ChatML
    losses = [m.value for m in client.get_metric_history(steps["sft-train"].info.run_id, "train/loss")]
    # a logged loss is one 8-conversation batch's: compare halves, not two noisy points
    half = len(losses) // 2
    assert len(losses) >= 3 and sum(losses[half:]) / len(losses[half:]) < sum(losses[:half]) / half
    assert steps["sft-train"].data.params["sft-train.max_steps"] == "20"  # sft.train, not pretraining's
    assert steps["train"].data.params["train.max_steps"] == "30"
    evaluated = steps["evaluate"].data.metrics
    assert evaluated["bits_per_byte"] > 0 and "champion_bits_per_byte" not in evaluated

    champion = client.get_model_version_by_alias("e2e-chat", "champion")
    assert champion.tags["run.sft-train"] == champion.run_id == steps["sft-train"].info.run_id  # tuned by, not registered by
    assert (champion.tags["training_stage"], champion.tags["chat_template"]) == ("sft", "default")
    assert champion.tags["base_model"].endswith("/train/model")  # the pretrained model it was tuned from
    mlflow.set_tracking_uri(sqlite_uri)
    chat = mlflow.pyfunc.load_model("models:/e2e-chat@champion")
    answer = chat.predict({"messages": [{"role": "user", "content": "Habari yako?"}], "max_tokens": 6})
    answer = answer[0] if isinstance(answer, list) else answer
    assert answer["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(answer["choices"][0]["message"]["content"], str)
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/e2e-chat/{champion.version}", dst_path=str(tmp_path / "dl")))
    config = json.loads(next(downloaded.rglob("tokenizer_config.json")).read_text())
    template = config.get("chat_template") or next(downloaded.rglob("chat_template.jinja")).read_text()
    assert template == DEFAULT_CHAT_TEMPLATE

    second = run_local(parse_config({
        "name": "e2e-chat", **common, "model": {"base": "models:/e2e-chat@champion"},
        "sft": sft_section(data, max_steps=2, learning_rate=3.0, warmup_steps=0, micro_batch_size=4,
                           global_batch_size=8),
    }), "e2e-chat-second", sqlite_uri, work_dir=tmp_path / "runs")  # fmt: skip
    assert second.status == "FINISHED"
    assert second.tags["homegrown.stages"] == "sft"
    assert second.tags["homegrown.chat_template"] == "base"  # the champion's own template
    # the alias pinned to the version it named when tokenising: every training node fetches those weights
    assert second.tags["homegrown.sft_base"] == f"models:/e2e-chat/{champion.version}"
    steps2 = nested_runs(client, second.experiment_id, second.parent_run_id)
    assert set(steps2) == {"sft-data", "sft-tokenize", "sft-train", "evaluate", "register"}
    assert second.tags["homegrown.sft_eval_digest"] == first.tags["homegrown.sft_eval_digest"]
    assert second.tags["homegrown.gate"] == "failed"
    assert "homegrown.champion_version" not in second.tags, "promote must not run when the gate fails"
    scored = steps2["evaluate"].data.metrics
    # the champion's own scores on the same frozen conversations, kept on its version
    assert scored["champion_bits_per_byte"] == evaluated["bits_per_byte"] < scored["bits_per_byte"]
    assert client.get_model_version_by_alias("e2e-chat", "champion").version == champion.version
    assert client.get_model_version_by_alias("e2e-chat", "candidate").tags["validation_status"] == "failed"
