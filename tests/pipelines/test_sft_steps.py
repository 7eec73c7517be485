"""The SFT steps' pipeline side: by-hand overrides, refusals before any training, what they log."""

import json
from pathlib import Path

import pytest

from components.manifest import Manifest
from components.sft.clean import SftDataError
from components.sft.tokenize import SftPackError
from pipelines import cli
from pipelines.config import parse_config
from pipelines.steps import sft_data, sft_tokenize
from tests.chat_model import tiny_chat_model


def write_conversations(path: Path, n: int) -> Path:
    rows = [{"id": f"c{i}", "messages": [{"role": "user", "content": f"Question number {i}: how are you today?"},
                                         {"role": "assistant", "content": f"Answer {i}: very well, thank you."}]}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_set_overrides_keep_the_commands_own_inputs(tmp_path, capsys):
    data = write_conversations(tmp_path / "chat.jsonl", 40)
    out = tmp_path / "sft-data"
    code = cli.main(["sft-data", "--input", str(data), "--output", str(out),
                     "--set", "sft.clean.eval_min_conversations=3", "--set", "sft.clean.near_dedup=null"])  # fmt: skip
    assert code == 0
    assert Manifest.load(str(out / "eval" / "manifest.json")).records == 3  # the override applied
    assert "sft-data:" in capsys.readouterr().out


def test_no_held_out_conversation_fails_the_data_step_before_any_training(tmp_path):
    data = write_conversations(tmp_path / "chat.jsonl", 12)
    config = parse_config({"model": {"base": "b"}, "sft": {"data": str(data), "clean": {"eval_fraction": 0.01}}})
    with pytest.raises(SftDataError, match="no conversation was held out for evaluation .*eval_min_conversations"):
        sft_data.run(config, str(data), str(tmp_path / "out"))


def test_a_row_longer_than_the_base_models_context_is_refused_naming_both(tmp_path):
    base = tiny_chat_model(tmp_path / "base", context=128)
    config = parse_config({"model": {"base": str(base)}, "sft": {"data": "-", "seq_len": 256}})
    with pytest.raises(SftPackError, match=r"sft.seq_len \(256\) exceeds the context length of .*base \(128\)"):
        sft_tokenize.run(config, str(tmp_path / "unused.json"), str(base), str(tmp_path / "out"))


def test_a_local_uri_is_not_an_alias_to_pin():
    assert sft_tokenize.pinned_version("data/bases/smollm2-135m") == "data/bases/smollm2-135m"
    assert sft_tokenize.pinned_version("models:/chat/3") == "models:/chat/3"
