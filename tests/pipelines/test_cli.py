"""The command line: useful help, and one clear message (no traceback) for bad input."""

import gzip
import json
from pathlib import Path

import pytest

from pipelines import cli

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["run", "compile", "submit", "clean", "tokenize", "train", "evaluate", "register"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 5


def test_missing_corpus_is_named_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"corpus: {tmp_path / 'nowhere'}\n")
    code, _, err = run(capsys, "run", str(config), "--work-dir", str(tmp_path / "runs"))
    assert code == 2
    assert "nowhere" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "kfp").exists()


def test_typo_in_config_is_named(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("corpus: x\ntrian: {}\n")
    code, _, err = run(capsys, "run", str(config))
    assert code == 2 and "trian: unknown key" in err


def test_zero_stage_out_of_range_via_set(capsys):
    code, _, err = run(capsys, "compile", str(CONFIGS / "demo.yaml"), "--set", "train.zero_stage=5")
    assert code == 2 and "train.zero_stage" in err and "got 5" in err


def test_clean_by_hand_counts_bad_records(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [
        {"id": "0", "text": "Everyone has the right to education. Education shall be free, at least in the elementary stages."},
        {"id": "1", "text": "No one shall be held in slavery or servitude; slavery shall be prohibited in all their forms."},
        {"id": "2", "text": "Everyone has the right to freedom of movement and residence within the borders of each State."},
    ]
    lines = [json.dumps(r).encode() for r in good] + [
        b'{"id": "no-text", "body": "wrong field"}',
        b"\xff\xfe not utf-8 at all",
        b"{not json",
    ]
    (corpus / "a.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    code, out, _ = run(capsys, "clean", "--input", str(corpus), "--output", str(tmp_path / "out"))
    assert code == 0
    assert "kept                         3\n" in out
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert stats["records_in"] == 6 and stats["kept"] == 3
    assert stats["quarantined"] == {"invalid_json": 1, "missing_text": 1, "not_utf8": 1}


def test_clean_by_hand_empty_corpus_fails_clearly(tmp_path, capsys):
    corpus = tmp_path / "empty.jsonl.gz"
    with gzip.open(corpus, "wb"):
        pass
    code, _, err = run(capsys, "clean", "--input", str(corpus), "--output", str(tmp_path / "out"))
    assert code == 1 and str(corpus) in err and "Traceback" not in err


def test_clean_by_hand_missing_input(tmp_path, capsys):
    code, _, err = run(capsys, "clean", "--input", str(tmp_path / "missing"), "--output", str(tmp_path / "out"))
    assert code == 1 and "missing" in err
