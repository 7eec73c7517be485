"""Evaluate step: rolling log-likelihood, bits per byte, champion block, report, samples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from components import shards
from components.evaluate.config import EvaluateConfig
from components.evaluate.scoring import rolling_windows, score_documents
from components.evaluate.step import EVAL_ROLE, evaluate_model, load_eval_documents, load_model
from components.manifest import Manifest, shard_info
from components.shards import Document
from components.tokenizer.train_bpe import train_bpe

CONTEXT = 16
TEXTS = [
    ("en", "The quick brown fox jumps over the lazy dog. " * 3),
    ("zh", "人人生而自由，在尊严和权利上一律平等。"),
    ("en", "Short one."),
    ("emoji", "ok 🎉🚀👋🏽 done"),
    ("zh", "今天天气很好，我们一起去公园散步。" * 2),
]


@pytest.fixture(scope="module")
def tokenizer():
    corpus = [t for _, t in TEXTS] * 5
    return train_bpe(corpus, vocab_size=300, min_frequency=2, min_vocab_fill=0.0)


def save_model(path: Path, tokenizer, *, seed: int = 0, zero_head: bool = False) -> str:
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=CONTEXT, n_embd=16, n_layer=1, n_head=2,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    if zero_head:
        with torch.no_grad():
            model.lm_head.weight.zero_()  # no bias in GPT-2's head: every logit is 0
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def eval_manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    docs = [Document(id=f"d{i}", text=t, meta={"lang_hint": lang}) for i, (lang, t) in enumerate(TEXTS)]
    uri = str(root / "part-00000.jsonl.gz")
    n = shards.write_documents(uri, docs)
    manifest_uri = str(root / "manifest.json")
    Manifest(kind="documents", root=str(root), shards=[shard_info(uri, n)], facts={"role": EVAL_ROLE}).save(manifest_uri)
    return manifest_uri, docs


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, tokenizer):
    return save_model(tmp_path_factory.mktemp("m") / "model", tokenizer, seed=1)


FAST = dict(prompts=["The", "人人"], max_new_tokens=8, batch_size=4)


def brute_force_nll(model, tokens: list[int], eos: int) -> float:
    """Each token scored on its own with as much preceding context as fits (stride 1)."""
    stream = [eos] + tokens
    total = 0.0
    with torch.no_grad():
        for i, target in enumerate(tokens):
            inputs = stream[max(0, i + 1 - CONTEXT) : i + 1]
            logits = model(torch.tensor([inputs])).logits[0, -1]
            total -= torch.log_softmax(logits.float(), -1)[target].item()
    return total


# --- windows ---------------------------------------------------------------------------


def test_rolling_windows_match_lm_eval():
    # lm-eval get_rolling_token_windows(range(10), -1, 4, 1) + make_disjoint_window, cut as HFLM does
    assert list(rolling_windows(list(range(10)), -1, 4, 1)) == [
        ([-1, 0, 1, 2], 4),
        ([3, 4, 5, 6], 4),
        ([5, 6, 7, 8], 2),
    ]
    # lm-eval's own gold case (tests/test_utils.py, test_get_rolling_token_windows_v1)
    assert list(rolling_windows(list(range(34)), -100, 10, 1)) == [
        ([-100, *range(0, 9)], 10),
        (list(range(9, 19)), 10),
        (list(range(19, 29)), 10),
        (list(range(23, 33)), 4),
    ]
    assert list(rolling_windows([7, 8], -1, 4, 1)) == [([-1, 7], 2)]
    assert list(rolling_windows([], -1, 4, 1)) == []
    # stride 2 (context_len 3): later windows predict 2 new tokens with 2 tokens of overlap
    assert list(rolling_windows(list(range(7)), -1, 4, 3)) == [([-1, 0, 1, 2], 4), ([1, 2, 3, 4], 2), ([2, 3, 4, 5], 1)]


# --- scoring ---------------------------------------------------------------------------


def test_uniform_model_gives_known_bits_per_byte(tmp_path, tokenizer, eval_manifest):
    manifest_uri, docs = eval_manifest
    model_uri = save_model(tmp_path / "zero", tokenizer, zero_head=True)
    result = evaluate_model(model_uri, manifest_uri, str(tmp_path / "out"), EvaluateConfig(**FAST))
    vocab = len(tokenizer)
    ids = [tokenizer(d.text, add_special_tokens=False)["input_ids"] for d in docs]
    tokens = sum(map(len, ids))
    nbytes = sum(len(d.text.encode("utf-8")) for d in docs)
    m = result.metrics
    assert m["tokens"] == tokens and m["bytes"] == nbytes and m["documents"] == len(docs)
    assert m["loss"] == pytest.approx(math.log(vocab), rel=1e-6)
    assert m["perplexity"] == pytest.approx(vocab, rel=1e-5)
    assert m["bits_per_byte"] == pytest.approx(tokens * math.log2(vocab) / nbytes, rel=1e-6)
    zh = [i for i, d in enumerate(docs) if d.meta["lang_hint"] == "zh"]
    zh_tokens = sum(len(ids[i]) for i in zh)
    zh_bytes = sum(len(docs[i].text.encode()) for i in zh)
    assert m["bits_per_byte_zh"] == pytest.approx(zh_tokens * math.log2(vocab) / zh_bytes, rel=1e-6)


def test_every_token_predicted_once_with_and_without_overlap(tokenizer, random_model):
    model, _ = load_model(random_model, Path("unused"), torch.device("cpu"))
    doc = Document(id="long", text=TEXTS[0][1] + TEXTS[1][1] * 2)
    ids = tokenizer(doc.text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3 * CONTEXT
    disjoint = score_documents(model, tokenizer, [doc], batch_size=3)
    overlapped = score_documents(model, tokenizer, [doc], batch_size=3, stride=5)
    stride1 = score_documents(model, tokenizer, [doc], batch_size=8, stride=1)
    assert disjoint.total.tokens == overlapped.total.tokens == stride1.total.tokens == len(ids)
    # stride 1: each token sees the full preceding context, exactly as scored one by one
    assert stride1.total.nll == pytest.approx(brute_force_nll(model, ids, tokenizer.eos_token_id), rel=1e-5)
    # more context changes the figure but not what is counted
    assert disjoint.total.nll != pytest.approx(stride1.total.nll, rel=1e-9)


def test_batching_does_not_change_scores(tokenizer, random_model, eval_manifest):
    _, docs = eval_manifest
    model, _ = load_model(random_model, Path("unused"), torch.device("cpu"))
    one = score_documents(model, tokenizer, docs, batch_size=1)
    many = score_documents(model, tokenizer, docs, batch_size=7)
    assert one.total.nll == pytest.approx(many.total.nll, rel=1e-5)
    assert one.total.tokens == many.total.tokens
    assert set(one.per_language) == {"en", "zh", "emoji"}
    assert sum(t.tokens for t in one.per_language.values()) == one.total.tokens


def test_stride_longer_than_context_is_an_error(tokenizer, random_model):
    model, _ = load_model(random_model, Path("unused"), torch.device("cpu"))
    with pytest.raises(ValueError, match="stride=17 exceeds the model's context of 16"):
        score_documents(model, tokenizer, [Document(id="x", text="abc")], stride=17)


# --- the step --------------------------------------------------------------------------


def test_champion_block_and_report(tmp_path, eval_manifest, random_model):
    manifest_uri, _ = eval_manifest
    out = tmp_path / "out"
    result = evaluate_model(random_model, manifest_uri, str(out), EvaluateConfig(**FAST), champion_uri=random_model)
    assert result.champion_metrics is not None
    for key in ("loss", "perplexity", "bits_per_byte", "tokens", "bytes", "documents"):
        assert result.champion_metrics[key] == pytest.approx(result.metrics[key], rel=1e-9)
    assert result.metrics["champion_bits_per_byte"] == pytest.approx(result.metrics["bits_per_byte"])
    results = json.loads(Path(result.results_uri).read_text())
    assert results["eval_digest"] == Manifest.load(manifest_uri).digest
    assert results["champion"]["model_uri"] == random_model
    assert results["champion"]["version"] is None  # a directory, not a registry version: no gate compares with it
    assert set(results["per_language"]) == {"en", "zh", "emoji"}
    report = (out / "report.md").read_text()
    assert report == result.report_markdown
    assert "| metric | challenger | champion | Δ |" in report
    assert "| bits per byte |" in report and "## Per language" in report and "| zh |" in report
    assert "## Samples" in report
    samples = json.loads((out / "samples.json").read_text())
    assert [s["prompt"] for s in samples] == ["The", "人人"] and samples == results["samples"]


def test_no_champion_block_without_champion(tmp_path, eval_manifest, random_model):
    manifest_uri, _ = eval_manifest
    result = evaluate_model(random_model, manifest_uri, str(tmp_path / "o"), EvaluateConfig(**FAST))
    assert result.champion_metrics is None and "champion_bits_per_byte" not in result.metrics
    assert "champion" not in json.loads(Path(result.results_uri).read_text())
    assert "| metric | value |" in result.report_markdown
    skipped = evaluate_model(
        random_model, manifest_uri, str(tmp_path / "p"), EvaluateConfig(**FAST, compare_champion=False),
        champion_uri=random_model,
    )
    assert skipped.champion_metrics is None


def test_samples_are_deterministic_and_fit_the_context(tokenizer, random_model):
    from components.evaluate.samples import generate_samples

    model, _ = load_model(random_model, Path("unused"), torch.device("cpu"))
    long_prompt = TEXTS[0][1]  # longer than the 16-token context
    kwargs = dict(max_new_tokens=40, temperature=1.0, seed=5)
    a = generate_samples(model, tokenizer, ["The", long_prompt, ""], **kwargs)
    b = generate_samples(model, tokenizer, ["The", long_prompt, ""], **kwargs)
    assert a == b
    assert generate_samples(model, tokenizer, [long_prompt], **kwargs)[0] == a[1]  # independent of other prompts
    other = generate_samples(model, tokenizer, ["The", long_prompt, ""], **{**kwargs, "seed": 6})
    assert [s["greedy"] for s in other] == [s["greedy"] for s in a]
    assert [s["sampled"] for s in other] != [s["sampled"] for s in a]
    assert all(s["greedy"] or s["sampled"] for s in a)


def test_changed_eval_shard_is_refused(tmp_path, random_model):
    uri = str(tmp_path / "part-00000.jsonl.gz")
    n = shards.write_documents(uri, [Document(id="a", text="hello")])
    manifest_uri = str(tmp_path / "manifest.json")
    Manifest(kind="documents", root=str(tmp_path), shards=[shard_info(uri, n)], facts={"role": EVAL_ROLE}).save(
        manifest_uri)  # fmt: skip
    shards.write_documents(uri, [Document(id="a", text="changed")])
    with pytest.raises(ValueError, match="sha256 mismatch"):
        evaluate_model(random_model, manifest_uri, str(tmp_path / "o"), EvaluateConfig(**FAST))


def test_only_the_held_out_set_is_scored(tmp_path, eval_manifest, random_model, capsys):
    """`homegrown evaluate --data` the cleaned corpus (training data included) is refused, naming the
    file and what to pass; the tokenizer step's eval set (facts.role held-out-eval) is scored."""
    from pipelines.cli import main

    manifest_uri, docs = eval_manifest
    eval_set = Manifest.load(manifest_uri)
    clean = tmp_path / "clean" / "manifest.json"  # what `homegrown clean` writes: the same documents, no role
    Manifest(kind="documents", root=eval_set.root, shards=eval_set.shards, facts={"stats": {"kept": 5}}).save(str(clean))
    assert main(["evaluate", "--model", random_model, "--data", str(clean), "--output", str(tmp_path / "out")]) == 1
    assert (f"{clean}: not the held-out evaluation set (kind='documents', facts.role=None; expected "
            "kind='documents', facts.role='held-out-eval'): other documents include training data. Pass the "
            "tokenizer step's manifest.json") in capsys.readouterr().err  # fmt: skip
    assert not (tmp_path / "out").exists()
    packed = tmp_path / "tok" / "manifest.json"  # a manifest of another kind, passed straight to the step
    Manifest(kind="packed-tokens", root=str(packed.parent), shards=[]).save(str(packed))
    with pytest.raises(ValueError, match="kind='packed-tokens', facts.role=None"):
        evaluate_model(random_model, str(packed), str(tmp_path / "out"), EvaluateConfig(**FAST))
    scored, held_out = load_eval_documents(manifest_uri)
    assert scored.facts["role"] == EVAL_ROLE and [d.text for d in held_out] == [d.text for d in docs]


def test_bits_per_byte_matches_lm_eval_loglikelihood_rolling(tmp_path, tokenizer):
    """The same model and documents through EleutherAI lm-eval's HFLM: bits-per-byte within 1 %
    (in practice equal to float precision), stride = context as lm-eval uses."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    path = save_model(tmp_path / "m", tokenizer, seed=3)
    docs = [Document(id=f"d{i}", text=t, meta={"lang_hint": lang}) for i, (lang, t) in enumerate(TEXTS)]
    model, tok = load_model(path, tmp_path / "load", torch.device("cpu"))
    ours = score_documents(model, tok, docs, batch_size=2, stride=None, device=torch.device("cpu")).total

    lm = HFLM(pretrained=path, backend="causal", batch_size=1, device="cpu", max_length=CONTEXT)
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(d.text,), idx=i)
                for i, d in enumerate(docs)]  # fmt: skip
    loglikelihoods = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    total_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    theirs_bpb = -sum(loglikelihoods) / math.log(2) / total_bytes

    assert ours.bytes == total_bytes
    assert ours.metrics()["bits_per_byte"] == pytest.approx(theirs_bpb, rel=0.01)
    assert ours.nll == pytest.approx(-sum(loglikelihoods), rel=1e-4)


def test_fertility_per_language(tmp_path, tokenizer):
    path = save_model(tmp_path / "m", tokenizer)
    docs = [Document(id=f"d{i}", text=t, meta={"lang_hint": lang}) for i, (lang, t) in enumerate(TEXTS)]
    model, tok = load_model(path, tmp_path / "load", torch.device("cpu"))
    scored = score_documents(model, tok, docs, device=torch.device("cpu"))
    en, zh = scored.per_language["en"].metrics(), scored.per_language["zh"].metrics()
    en_texts = [t for lang, t in TEXTS if lang == "en"]
    en_tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in en_texts)
    assert en["tokens_per_char"] == pytest.approx(en_tokens / sum(len(t) for t in en_texts))
    assert en["tokens_per_word"] == pytest.approx(en_tokens / sum(len(t.split()) for t in en_texts))
    assert 0 < zh["tokens_per_char"] and math.isnan(zh["tokens_per_word"])  # no spaces, no words
    assert scored.per_source == {}  # no document names a source

    sourced = [Document(id=d.id, text=d.text, meta={**d.meta, "source": "udhr" if i % 2 else "web"})
               for i, d in enumerate(docs)]  # fmt: skip
    by_source = score_documents(model, tok, sourced, device=torch.device("cpu")).per_source
    assert sorted(by_source) == ["udhr", "web"] and by_source["web"].documents == 3
    assert by_source["web"].nll + by_source["udhr"].nll == pytest.approx(scored.total.nll, rel=1e-6)


def test_bad_models_fail_with_what_to_do(tmp_path, tokenizer, eval_manifest):
    from components.hf_model import ModelDirError

    manifest_uri, _ = eval_manifest
    good = save_model(tmp_path / "good", tokenizer)
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        (no_tokenizer / name).write_bytes((Path(good) / name).read_bytes())
    with pytest.raises(ModelDirError, match="no tokenizer beside the weights"):
        evaluate_model(str(no_tokenizer), manifest_uri, str(tmp_path / "out1"), EvaluateConfig())

    broken = tmp_path / "broken-champion"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "pytorch_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(RuntimeError, match="the champion models:/m@champion \\(version 3\\) cannot be evaluated") as caught:
        evaluate_model(good, manifest_uri, str(tmp_path / "out2"), EvaluateConfig(), str(broken),
                       "models:/m@champion (version 3)")  # fmt: skip
    assert "convert it to safetensors" in str(caught.value)
    assert not (tmp_path / "out2" / "results.json").exists()  # nothing for the gate to read


def test_report_page_has_both_plots_inline(tokenizer, tmp_path, eval_manifest):
    from components.evaluate.plots import report_html

    manifest_uri, _ = eval_manifest
    model = save_model(tmp_path / "m", tokenizer)
    champion = save_model(tmp_path / "c", tokenizer, seed=1)
    result = evaluate_model(model, manifest_uri, str(tmp_path / "out"), EvaluateConfig(), champion,
                            "models:/m@champion (version 3)", None, "3")  # fmt: skip
    results = json.loads(Path(result.results_uri).read_text())
    assert results["champion"]["version"] == "3"  # the register step's gate checks it is the current champion
    page = report_html(results, [4.0, 3.5, 3.1], "**Gate: passed**")
    assert page.count("<svg") == 2 and "Training loss" in page and "by language" in page
    assert "<?xml" not in page and "**Gate: passed**" in page
    assert f"{results['champion']['metrics']['bits_per_byte']:.4f}" in page  # the champion's figures
    assert "champion" in page.split("<svg")[2]  # and its bars: the legend only shows with a champion
