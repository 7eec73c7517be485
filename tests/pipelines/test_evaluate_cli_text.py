"""`homegrown evaluate --text FILE`: several models, named as the registry, a run or a directory,
scored on the user's own file in one printed table; wrong uses refused with what to do."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from components.evaluate.config import EvaluateConfig
from components.evaluate.text_file import score_text_file
from components.tokenizer.train_bpe import train_bpe
from pipelines import cli

TEXTS = ["The quick brown fox jumps over the lazy dog, and the dog sleeps on.",
         "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心。",
         "Tous les êtres humains naissent libres et égaux en dignité et en droits."]  # fmt: skip


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_bpe(TEXTS * 5, vocab_size=300, min_frequency=2, min_vocab_fill=0.0)
    out = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
        model.save_pretrained(root / f"m{seed}")
        tokenizer.save_pretrained(root / f"m{seed}")
        out.append(str(root / f"m{seed}"))
    return out


@pytest.fixture
def text_file(tmp_path) -> str:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS) + '{"text": ""}\n',
                    encoding="utf-8")  # fmt: skip
    return str(path)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_from_the_registry_a_run_and_a_directory_in_one_table(tmp_path, capsys, model_dirs, text_file,
                                                                      sqlite_uri):  # fmt: skip
    import mlflow
    from mlflow.tracking import MlflowClient

    from components.mlflow_runs import ensure_experiment

    client = MlflowClient(sqlite_uri)
    run_id = client.create_run(ensure_experiment(sqlite_uri, "text-scores")).info.run_id
    client.log_artifacts(run_id, model_dirs[1], "model")
    client.create_registered_model("tiny")
    client.create_model_version("tiny", f"runs:/{run_id}/model", run_id)
    client.set_registered_model_alias("tiny", "champion", "1")
    try:
        uris = [model_dirs[0], f"runs:/{run_id}/model", "models:/tiny@champion"]
        code, out, err = run(capsys, "evaluate", *(a for uri in uris for a in ("--model", uri)), "--text", text_file,
                             "--output", str(tmp_path / "out"), "--tracking-uri", sqlite_uri)  # fmt: skip
    finally:
        mlflow.set_tracking_uri(None)
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    expected = score_text_file([model_dirs[0], model_dirs[1]], text_file, str(tmp_path / "direct"), EvaluateConfig())
    bpb = [m["metrics"]["bits_per_byte"] for m in expected.results["models"]]
    assert [m["metrics"]["bits_per_byte"] for m in results["models"]] == [bpb[0], bpb[1], bpb[1]]
    assert [m["model_uri"] for m in results["models"]] == uris
    assert results["documents"] == 3 and results["quarantined"] == {"total": 1, "reasons": {"empty_text": 1}}

    lines = out.splitlines()
    assert f"| | documents | bytes | `{uris[0]}` | `{uris[1]}` | `{uris[2]}` |" in lines
    total = sum(len(t.encode()) for t in TEXTS)
    assert f"| **all** | 3 | {total:,} | {bpb[0]:.4f} | {bpb[1]:.4f} | {bpb[1]:.4f} |" in lines
    for lang in ("en", "fr", "zh"):
        figures = [m["per_language"][lang]["bits_per_byte"] for m in results["models"]]
        assert any(line.startswith(f"| {lang} | 1 | ") and line.endswith(" | ".join(f"{f:.4f}" for f in figures) + " |")
                   for line in lines), lang  # fmt: skip
    assert "- quarantined (not scored): 1 (empty_text 1; each in quarantine.jsonl)" in lines
    assert lines[-1] == f"results: {tmp_path / 'out' / 'results.json'}"


def test_champion_is_one_more_column(tmp_path, capsys, model_dirs, text_file):
    code, out, err = run(capsys, "evaluate", "--model", model_dirs[0], "--champion", model_dirs[1], "--text", text_file,
                         "--output", str(tmp_path / "out"), "--set", "evaluate.stride=4")  # fmt: skip
    assert code == 0, err
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["model_uri"] for m in results["models"]] == model_dirs
    assert results["config"]["stride"] == 4


def test_a_text_file_given_as_data_is_pointed_to_text(tmp_path, capsys, model_dirs, text_file):
    code, _, err = run(capsys, "evaluate", "--model", model_dirs[0], "--data", text_file, "--output", str(tmp_path))
    assert code == 1 and "Traceback" not in err
    assert err.strip() == (
        f"homegrown evaluate: error: ValueError: {text_file}: not a homegrown manifest: --data takes the manifest.json "
        f"`homegrown tokenize` writes. To score your own text file, use `homegrown evaluate --model MODEL --text "
        f"{text_file} --output DIR`"
    )


def test_several_models_on_a_manifest_are_refused(tmp_path, capsys, model_dirs):
    code, _, err = run(capsys, "evaluate", "--model", model_dirs[0], "--model", model_dirs[1], "--data",
                       str(tmp_path / "manifest.json"), "--output", str(tmp_path))  # fmt: skip
    assert code == 1
    assert "--data scores one --model (and --champion), got 2: to compare models on one file, use --text FILE" in err


def test_data_or_text_not_both(tmp_path, capsys, model_dirs, text_file):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", "--model", model_dirs[0], "--data", text_file, "--text", text_file, "--output", "x"])
    assert exit_info.value.code == 2
    assert "argument --text: not allowed with argument --data" in capsys.readouterr().err


def test_a_bad_file_is_one_clear_line(tmp_path, capsys, model_dirs):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"body": "a"}\n', encoding="utf-8")
    code, _, err = run(capsys, "evaluate", "--model", model_dirs[0], "--text", str(path), "--output", str(tmp_path / "o"))
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "Name the field holding the text with --text-field (it was 'text')" in err
    code, out, err = run(capsys, "evaluate", "--model", model_dirs[0], "--text", str(path), "--text-field", "body",
                         "--output", str(tmp_path / "o"))  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "results.json").read_text())["documents"] == 1
