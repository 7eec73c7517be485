"""Scoring your own text (components/evaluate/text_file.py): JSONL, .txt and Parquet give the
evaluate step's own figures; languages from a field or the clean step's language ID; several models
in one table; what cannot be scored is quarantined with its reason, a bad file refused by name."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from components import shards
from components.evaluate import step
from components.evaluate.config import EvaluateConfig
from components.evaluate.step import EVAL_ROLE, evaluate_model
from components.evaluate.text_file import (
    LANGID, TextFileError, assign_languages, read_text_file, render_text_report, score_text_file
)  # fmt: skip
from components.manifest import Manifest, shard_info
from components.shards import Document
from components.storage import StorageError
from components.tokenizer.train_bpe import train_bpe

CONTEXT = 16
# (the language py3langid gives, text): one text holds a line break, none a blank line
DOCS = [
    ("en", "The quick brown fox jumps over the lazy dog.\nIt was a sunny morning in the old park."),
    ("zh", "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心，并应以兄弟关系的精神相对待。"),
    ("fr", "Tous les êtres humains naissent libres et égaux en dignité et en droits."),
    ("en", "Everyone has the right to life, liberty and security of person."),
    ("zh", "今天天气很好，我们一起去公园散步吧。"),
]
FAST = EvaluateConfig(batch_size=3, prompts=["The"], max_new_tokens=2)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe([t for _, t in DOCS] * 5, vocab_size=300, min_frequency=2, min_vocab_fill=0.0)


def save_model(path: Path, tokenizer, *, seed: int = 0, zero_head: bool = False) -> str:
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    if zero_head:
        with torch.no_grad():
            model.lm_head.weight.zero_()  # every logit 0: each token costs ln(vocab) nats
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer) -> dict[str, str]:
    root = tmp_path_factory.mktemp("models")
    return {"random": save_model(root / "random", tokenizer, seed=1),
            "uniform": save_model(root / "uniform", tokenizer, zero_head=True)}  # fmt: skip


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The same documents as JSONL, plain text (CRLF line ends, a byte-order mark, extra blank lines)
    and Parquet."""
    root = tmp_path_factory.mktemp("text")
    jsonl = write_jsonl(root / "docs.jsonl", [{"id": f"d{i}", "text": t} for i, (_, t) in enumerate(DOCS)])
    txt = root / "docs.txt"
    txt.write_bytes(b"\xef\xbb\xbf\r\n" + "\r\n \r\n\r\n".join(t.replace("\n", "\r\n") for _, t in DOCS).encode() + b"\r\n\n")
    parquet = str(root / "docs.parquet")
    pq.write_table(pa.table({"body": [t for _, t in DOCS], "n": list(range(len(DOCS)))}), parquet)
    return {"jsonl": jsonl, "txt": str(txt), "parquet": parquet}


def figures(block: dict) -> dict:
    return {"metrics": block["metrics"], "per_language": block["per_language"], "per_source": block["per_source"]}


# ---- the same figures as the evaluate step -------------------------------------------------------


def test_every_format_gives_the_evaluate_steps_own_figures(tmp_path, models, files, monkeypatch):
    calls = []
    real = step.score_documents

    def spy(*args, **kwargs):  # the one bits-per-byte path, whoever scores
        calls.append(kwargs["stride"])
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "score_documents", spy)
    config = FAST.model_copy(update={"stride": 5})
    scored = {}
    for fmt, uri in files.items():
        score_text_file([models["random"]], uri, str(tmp_path / fmt), config, text_field="body" if fmt == "parquet" else "text")
        scored[fmt] = json.loads((tmp_path / fmt / "results.json").read_text())

    # the evaluate step on a held-out-set manifest of the same documents, labelled as language ID labels them
    root = tmp_path / "eval"
    root.mkdir()
    shard = str(root / "part-00000.jsonl.gz")
    n = shards.write_documents(shard, [Document(f"d{i}", t, {"lang_hint": lang}) for i, (lang, t) in enumerate(DOCS)])
    manifest = str(root / "manifest.json")
    Manifest(kind="documents", root=str(root), shards=[shard_info(shard, n)], facts={"role": EVAL_ROLE}).save(manifest)
    evaluate_model(models["random"], manifest, str(tmp_path / "step"), config)
    expected = json.loads((tmp_path / "step" / "results.json").read_text())

    assert calls == [5, 5, 5, 5]
    for fmt, results in scored.items():
        (block,) = results["models"]
        assert figures(block) == figures(expected), fmt
        assert block["metrics_flat"] == {k: v for k, v in expected["metrics_flat"].items()
                                         if not k.startswith("eval_")}, fmt  # fmt: skip
        assert results["documents"] == 5 and results["quarantined"] == {"total": 0, "reasons": {}}
        assert results["language_from"] == {LANGID: 5}
    assert sorted(expected["per_language"]) == ["en", "fr", "zh"]
    assert [expected["per_language"][k]["documents"] for k in ("en", "fr", "zh")] == [2, 1, 2]
    assert expected["metrics"]["bytes"] == sum(len(t.encode()) for _, t in DOCS)
    assert scored["jsonl"]["format"] == "jsonl" and scored["txt"]["format"] == "text"
    assert scored["txt"]["text_field"] is None and scored["parquet"]["text_field"] == "body"


def test_plain_text_is_one_document_per_paragraph(tmp_path, files):
    read = read_text_file(files["txt"])
    assert [d.text for d in read.documents] == [t for _, t in DOCS]
    assert [d.id for d in read.documents] == [f"{files['txt']}:{n}" for n in (2, 6, 9, 12, 15)]
    assert read.quarantined == []


# ---- several models, one table --------------------------------------------------------------------


def test_two_models_in_one_table(tmp_path, models, files, tokenizer):
    uris = [models["random"], models["uniform"]]
    scores = score_text_file(uris, files["jsonl"], str(tmp_path / "out"), FAST)
    random, uniform = scores.results["models"]
    assert [random["model_uri"], uniform["model_uri"]] == uris

    # the uniform model's figures are known without it: ln(vocab) nats per token
    tokens = {lang: 0 for lang in ("en", "fr", "zh")}
    nbytes = dict(tokens)
    for lang, text in DOCS:
        tokens[lang] += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        nbytes[lang] += len(text.encode())
    for lang in tokens:
        m = uniform["per_language"][lang]
        assert m["tokens"] == tokens[lang] and m["bytes"] == nbytes[lang]
        assert m["bits_per_byte"] == pytest.approx(tokens[lang] * math.log2(len(tokenizer)) / nbytes[lang], rel=1e-6)  # float32 log-softmax
    assert uniform["metrics"]["perplexity"] == pytest.approx(len(tokenizer), rel=1e-5)

    lines = scores.report_markdown.splitlines()
    head = lines.index("## Bits per byte")
    assert lines[head + 2] == f"| | documents | bytes | `{uris[0]}` | `{uris[1]}` |"
    rows = lines[head + 4 : head + 8]
    assert rows == [
        f"| {label} | {m0['documents']:,.0f} | {m0['bytes']:,.0f} | {m0['bits_per_byte']:.4f} | {m1['bits_per_byte']:.4f} |"
        for label, m0, m1 in [("**all**", random["metrics"], uniform["metrics"])]
        + [(lang, random["per_language"][lang], uniform["per_language"][lang]) for lang in ("en", "fr", "zh")]
    ]
    assert rows[0] == f"| **all** | 5 | {sum(nbytes.values()):,} | {random['metrics']['bits_per_byte']:.4f} | " \
                      f"{uniform['metrics']['bits_per_byte']:.4f} |"  # fmt: skip
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [m["metrics"]["bits_per_byte"] for m in written["models"]] == [
        random["metrics"]["bits_per_byte"], uniform["metrics"]["bits_per_byte"]]
    assert (tmp_path / "out" / "report.md").read_text() == scores.report_markdown
    assert not (tmp_path / "out" / "quarantine.jsonl").exists()


# ---- languages ---------------------------------------------------------------------------------------


def test_language_from_a_field_else_language_id(tmp_path):
    docs = [Document("a", DOCS[0][1], {"lang": "eng"}), Document("b", DOCS[1][1], {"lang_hint": "cmn", "lang": "x"}),
            Document("c", DOCS[2][1], {"lang": ""}), Document("d", "12345 !!!", {})]  # fmt: skip
    assert assign_languages(docs) == {"field lang": 1, "field lang_hint": 1, LANGID: 2}
    assert [d.meta["lang_hint"] for d in docs] == ["eng", "cmn", "fr", "und"]

    named = [Document("a", DOCS[0][1], {"language": "en-GB", "lang": "x"}), Document("b", DOCS[1][1], {"lang": "x"})]
    assert assign_languages(named, "language") == {"field language": 1, LANGID: 1}
    assert [d.meta["lang_hint"] for d in named] == ["en-GB", "zh"]


def test_per_language_groups_follow_the_field(tmp_path, models):
    uri = write_jsonl(tmp_path / "labelled.jsonl", [{"text": t, "lang": "xx" if i < 2 else lang, "source": f"s{i % 2}"}
                                                    for i, (lang, t) in enumerate(DOCS)])  # fmt: skip
    results = score_text_file([models["random"]], uri, str(tmp_path / "out"), FAST).results
    block = results["models"][0]
    assert {k: v["documents"] for k, v in block["per_language"].items()} == {"en": 1, "fr": 1, "xx": 2, "zh": 1}
    assert {k: v["documents"] for k, v in block["per_source"].items()} == {"s0": 3, "s1": 2}
    assert results["language_from"] == {"field lang": 5}
    assert sum(v["bytes"] for v in block["per_language"].values()) == block["metrics"]["bytes"]


# ---- what cannot be scored ------------------------------------------------------------------------------


def test_unscorable_records_are_quarantined_and_counted(tmp_path, models, files):
    path = tmp_path / "messy.jsonl"
    good = [json.dumps({"text": t}, ensure_ascii=False).encode() for _, t in DOCS]
    path.write_bytes(b"\n".join([good[0], b'{"text": ""}', good[1], b'{"title": "no text"}', b"{not json",
                                 good[2], b'{"text": "caf\xe9"}', good[3], b'{"text": 7}', b"", good[4]]) + b"\n")  # fmt: skip
    scores = score_text_file([models["random"]], str(path), str(tmp_path / "out"), FAST)
    clean = score_text_file([models["random"]], files["jsonl"], str(tmp_path / "clean"), FAST)
    assert scores.results["documents"] == 5
    assert scores.results["quarantined"] == {"total": 5, "reasons": {
        "empty_text": 1, "invalid_json": 1, "missing_text": 1, "not_utf8": 1, "text_not_a_string": 1}}  # fmt: skip
    written = [json.loads((tmp_path / out / "results.json").read_text())["models"][0] for out in ("out", "clean")]
    assert figures(written[0]) == figures(written[1])  # (from JSON: NaN, e.g. zh's tokens per word, is null there)
    rows = list(shards.read_json_lines(str(tmp_path / "out" / "quarantine.jsonl")))
    assert [(r["source"], r["reason"]) for r in rows] == [
        (f"{path}:2", "empty_text"), (f"{path}:4", "missing_text"), (f"{path}:5", "invalid_json"),
        (f"{path}:7", "not_utf8"), (f"{path}:9", "text_not_a_string")]  # fmt: skip
    assert "- quarantined (not scored): 5 (empty_text 1, invalid_json 1, missing_text 1, not_utf8 1, " \
           "text_not_a_string 1; each in quarantine.jsonl)" in scores.report_markdown.splitlines()  # fmt: skip


def test_plain_text_quarantines_undecodable_and_overlong_paragraphs(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"good one\n\nline two\ncaf\xe9 here\n\n" + b"x" * 50 + b"\n" + b"y" * 30 + b"\n\nlast\n")
    read = read_text_file(str(path), max_line_bytes=60)
    assert [(d.id, d.text) for d in read.documents] == [(f"{path}:1", "good one"), (f"{path}:9", "last")]
    assert [(q.source, q.reason) for q in read.quarantined] == [(f"{path}:3", "not_utf8"), (f"{path}:6", "line_too_long")]
    assert read.quarantined[0].detail.startswith("line 4: byte 0xe9 is not UTF-8")
    assert read.quarantined[1].raw == "x" * 50 + "\n" + "y" * 30 + "\n"

    one_long_line = tmp_path / "long.txt"
    one_long_line.write_bytes(b"z" * 500 + b"\n\nshort\n")
    again = read_text_file(str(one_long_line), max_line_bytes=100)
    assert [d.text for d in again.documents] == ["short"]
    assert [(q.source, q.reason, len(q.raw)) for q in again.quarantined] == [(f"{one_long_line}:1", "line_too_long", 200)]


def test_parquet_rows_are_named_by_the_file_and_quarantined(tmp_path):
    path = str(tmp_path / "rows.parquet")
    pq.write_table(pa.table({"text": [DOCS[0][1], None, "  ", DOCS[2][1]], "lang": ["en", "en", None, None]}), path)
    read = read_text_file(path)
    assert [d.id for d in read.documents] == [f"{path}:1", f"{path}:4"]
    assert [(q.source, q.reason) for q in read.quarantined] == [(f"{path}:2", "missing_text"), (f"{path}:3", "empty_text")]
    assert read.language_from == {"field lang": 1, LANGID: 1}
    assert [d.meta["lang_hint"] for d in read.documents] == ["en", "fr"]


@pytest.mark.parametrize("name, content, message", [
    ("notes.csv", b"text\nhello\n", "cannot tell the format from the name; name it .jsonl"),
    ("empty.txt", b"\n \n\n", "empty, no document to score"),
    ("wide.txt", "hello".encode("utf-16"), "UTF-16 text, but text files must be UTF-8"),
    ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "NUL bytes near the start"),
    ("fields.jsonl", b'{"body": "a"}\n{"body": "b"}\n',
     "no document to score: every record was quarantined (missing_text 2); the first, {path}:1: missing_text. "
     "Name the field holding the text with --text-field (it was 'text')"),
    ("blanks.jsonl", b'{"text": " "}\n', "every record was quarantined (empty_text 1)"),
    ("image.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "every record was quarantined (binary_file 1)"),
    ("fake.parquet", b"PAR1 not really", "not a readable Parquet file"),
])  # fmt: skip
def test_a_bad_file_is_refused_by_name(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TextFileError) as refused:
        read_text_file(str(path))
    assert str(refused.value).startswith(f"{path}: ")
    assert message.format(path=path) in str(refused.value)


def test_parquet_text_column_is_checked(tmp_path):
    path = str(tmp_path / "cols.parquet")
    pq.write_table(pa.table({"body": ["a"], "n": [1]}), path)
    with pytest.raises(TextFileError, match=r"no column 'text' \(columns: \['body', 'n'\]\); name the text column "
                                            r"with --text-field"):  # fmt: skip
        read_text_file(path)
    with pytest.raises(TextFileError, match="column 'n' is int64, not text; name a string column with --text-field"):
        read_text_file(path, text_field="n")
    assert [d.text for d in read_text_file(path, text_field="body").documents] == ["a"]


def test_a_missing_file_or_model_is_named(tmp_path, models, files):
    with pytest.raises(StorageError, match="nowhere.jsonl: cannot read"):
        read_text_file(str(tmp_path / "nowhere.jsonl"))
    with pytest.raises(ValueError, match="no model to score"):
        score_text_file([], files["jsonl"], str(tmp_path / "out"), FAST)
    with pytest.raises(ValueError, match="no-model: not a directory"):
        score_text_file([models["random"], str(tmp_path / "no-model")], files["jsonl"], str(tmp_path / "out"), FAST)
    assert not (tmp_path / "out" / "results.json").exists()


def test_report_marks_figures_a_model_lacks():
    block = {"model_uri": "m|1", "metrics": {"bits_per_byte": 1.5, "documents": 1.0, "bytes": 4.0, "loss": 1.0,
                                             "perplexity": math.e, "tokens": 3.0, "tokens_per_char": 0.75},
             "per_language": {"en": {"bits_per_byte": float("nan"), "documents": 1.0, "bytes": 4.0}}, "eval_seconds": 0.5}  # fmt: skip
    report = render_text_report({"text_uri": "f.txt", "format": "text", "text_field": None, "sha256": "ab" * 32,
                                 "documents": 1, "quarantined": {"total": 0, "reasons": {}},
                                 "language_from": {LANGID: 1}, "models": [block]})  # fmt: skip
    lines = report.splitlines()
    assert "- file: `f.txt` (plain text, a document per paragraph, sha256 `abababababab`)" in lines
    assert "| | documents | bytes | `m\\|1` |" in lines
    assert "| **all** | 1 | 4 | 1.5000 |" in lines and "| en | 1 | 4 | – |" in lines
    assert "- language from: language ID 1" in lines and "| seconds | 0.50 |" in lines


def test_files_and_models_on_s3_score_as_local_ones(tmp_path, models, files, bucket, s3_env):
    from components import storage

    storage.upload_dir(models["random"], f"s3://{bucket}/models/random")
    score_text_file([models["random"]], files["jsonl"], str(tmp_path / "local"), FAST)
    expected = json.loads((tmp_path / "local" / "results.json").read_text())["models"][0]
    for fmt, path in files.items():
        uri = f"s3://{bucket}/in/{Path(path).name}"
        storage.write_bytes(uri, Path(path).read_bytes())
        out = f"s3://{bucket}/out/{fmt}"
        scores = score_text_file([f"s3://{bucket}/models/random"], uri, out, FAST,
                                 text_field="body" if fmt == "parquet" else "text")  # fmt: skip
        assert scores.results_uri == f"{out}/results.json"
        block = json.loads(storage.read_text(scores.results_uri))["models"][0]
        assert figures(block) == figures(expected), fmt
        assert scores.results["documents"] == 5 and scores.results["text_uri"] == uri
