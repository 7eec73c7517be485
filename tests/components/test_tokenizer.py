"""Tokenizer step: held-out split, byte-level BPE, packing — on tiny inline multilingual text."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from components import shards
from components.manifest import Manifest, shard_info
from components.shards import Document
from components.tokenizer.config import TokenizerConfig
from components.tokenizer.split import select_eval
from components.tokenizer.step import NotEnoughDataError, build_tokenizer_and_pack
from components.tokenizer.train_bpe import EOS_TOKEN, VocabularyTooSmallError, train_bpe

SENTENCES = [
    ("en", "The quick brown fox jumps over the lazy dog near the river bank."),
    ("en", "Training a small language model needs clean text and a good tokenizer."),
    ("en", "Every step counts what it did and why it dropped anything at all."),
    ("zh", "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心。"),
    ("zh", "今天天气很好，我们一起去公园散步，然后吃晚饭。"),
    ("zh", "机器学习模型需要大量的数据来训练和评估。"),
    ("sw", "Watu wote wamezaliwa huru, hadhi na haki zao ni sawa."),
    ("fr", "Tous les êtres humains naissent libres et égaux en dignité et en droits."),
    ("emoji", "Great job 🎉🚀 see you soon 👋🏽 — ok? ✅"),
]


def make_docs(n: int = 60) -> list[Document]:
    docs = []
    for i in range(n):
        lang, first = SENTENCES[i % len(SENTENCES)]
        _, second = SENTENCES[(i * 7 + 3) % len(SENTENCES)]
        docs.append(Document(id=f"doc-{i:03d}", text=f"{first} {second} #{i}", meta={"lang_hint": lang}))
    return docs


def write_corpus(root: Path, docs: list[Document], parts: int = 2) -> str:
    infos = []
    for p in range(parts):
        uri = str(root / f"part-{p:05d}.jsonl.gz")
        count = shards.write_documents(uri, docs[p::parts])
        infos.append(shard_info(uri, count))
    manifest_uri = str(root / "manifest.json")
    Manifest(kind="documents", root=str(root), shards=infos).save(manifest_uri)
    return manifest_uri


CONFIG = dict(vocab_size=300, min_frequency=2, seq_len=16, eval_fraction=0.2, eval_max_documents=8, seed=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    docs = make_docs()
    source = write_corpus(root / "clean", docs)
    result = build_tokenizer_and_pack(source, str(root / "out"), TokenizerConfig(**CONFIG))
    return root, docs, source, result


# --- split -----------------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_order_independent():
    docs = make_docs(200)
    kwargs = dict(seed=1, eval_fraction=0.1, max_documents=1000)
    a = select_eval(docs, **kwargs)
    shuffled = docs[:]
    random.Random(0).shuffle(shuffled)
    b = select_eval(shuffled, **kwargs)
    assert a.keys == b.keys and 5 < len(a) < 40
    flags = {doc.id: held for held, doc, _ in a.partition(docs)}
    held_ids = {i for i, held in flags.items() if held}
    assert len(held_ids) == len(a) and len(flags) == 200  # every doc on exactly one side
    assert select_eval(docs, **{**kwargs, "seed": 2}).keys != a.keys


def test_split_cap_keeps_lowest_hashes_whatever_the_order():
    docs = make_docs(200)
    capped = select_eval(docs, seed=1, eval_fraction=0.4, max_documents=7)
    assert len(capped) == 7
    assert select_eval(list(reversed(docs)), seed=1, eval_fraction=0.4, max_documents=7).keys == capped.keys
    uncapped = select_eval(docs, seed=1, eval_fraction=0.4, max_documents=1000)
    assert set(capped.keys) <= set(uncapped.keys)


def test_split_min_documents_floor():
    docs = make_docs(4)
    assert len(select_eval(docs, seed=0, eval_fraction=1e-9, max_documents=10, min_documents=1)) == 1
    assert len(select_eval(docs[:1], seed=0, eval_fraction=1e-9, max_documents=10, min_documents=1)) == 0


# --- tokenizer -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["Hello, world!  Two spaces.\n", "人人生而自由，在尊严和权利上一律平等。", "emoji 🎉🚀👋🏽 ✅", "  leading", "unseen: ʃɐ ქართ"],
)
def test_tokenizer_round_trip(built, text):
    root, *_ = built
    tok = AutoTokenizer.from_pretrained(str(root / "out" / "tokenizer"))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_tokenizer_loads_back_with_special_tokens(built):
    root, _, _, result = built
    tok = AutoTokenizer.from_pretrained(str(root / "out" / "tokenizer"))
    assert tok.eos_token == tok.bos_token == tok.unk_token == tok.pad_token == EOS_TOKEN
    assert tok.eos_token_id == result.manifest.facts["eos_token_id"] == 0
    assert len(tok) == result.manifest.facts["vocab_size"] == result.metrics["vocab_size"]
    assert 270 <= len(tok) <= 300


# --- packing and outputs ---------------------------------------------------------------


def test_layout_and_facts(built):
    root, docs, source, result = built
    out = root / "out"
    facts = result.manifest.facts
    assert result.manifest.kind == "packed-tokens"
    assert result.manifest_uri == str(out / "manifest.json")
    assert Manifest.load(result.manifest_uri).digest == result.manifest.digest
    assert set(facts) >= {
        "tokenizer_uri", "seq_len", "vocab_size", "eos_token_id", "train_documents", "train_tokens",
        "train_sequences", "eval_manifest_uri", "eval_documents", "eval_digest", "source_manifest_digest",
    }
    assert facts["tokenizer_uri"] == str(out / "tokenizer")
    assert facts["source_manifest_digest"] == Manifest.load(source).digest
    eval_manifest = Manifest.load(facts["eval_manifest_uri"])
    assert eval_manifest.kind == "documents" and eval_manifest.digest == facts["eval_digest"]
    eval_docs = list(shards.iter_texts([s.uri for s in eval_manifest.shards]))
    assert 1 <= len(eval_docs) == facts["eval_documents"] <= 8
    assert facts["train_documents"] + facts["eval_documents"] == len(docs)
    assert eval_docs[0].meta == {"lang_hint": eval_docs[0].meta["lang_hint"]}  # metadata travels
    assert [s.uri for s in result.manifest.shards] == [str(out / "train" / "part-00000.npy")]


def test_packing_lengths_are_exact(built):
    root, docs, _, result = built
    facts = result.manifest.facts
    tok = AutoTokenizer.from_pretrained(facts["tokenizer_uri"])
    held = {d.id for d in shards.iter_texts([s.uri for s in Manifest.load(facts["eval_manifest_uri"]).shards])}
    train = [d for d in docs if d.id not in held]
    expected_tokens = sum(len(tok(d.text, add_special_tokens=False)["input_ids"]) + 1 for d in train)
    arrays = [np.load(s.uri, allow_pickle=False) for s in result.manifest.shards]
    rows = np.concatenate(arrays)
    assert rows.dtype == np.int32 and rows.shape[1] == 16
    assert facts["train_tokens"] == expected_tokens
    assert rows.size == expected_tokens - result.metrics["dropped_remainder_tokens"]
    assert 0 <= result.metrics["dropped_remainder_tokens"] < 16
    assert rows.shape[0] == facts["train_sequences"] == result.manifest.records
    assert int((rows == 0).sum()) >= len(train) - 1  # one EOS per document (the last may be cut off)
    # packed text decodes back to whole training documents, separated by EOS
    stream = rows.reshape(-1).tolist()
    first_doc = tok.decode(stream[: stream.index(0)])
    assert first_doc in {d.text for d in train}


def test_fertility_per_language_and_script(built):
    """Train-side fertility, recomputed here document by document from the saved tokenizer."""
    from components.clean.langid import detect_script

    _, docs, _, result = built
    facts = result.manifest.facts
    tok = AutoTokenizer.from_pretrained(facts["tokenizer_uri"])
    held = {d.id for d in shards.iter_texts([s.uri for s in Manifest.load(facts["eval_manifest_uri"]).shards])}
    train = [d for d in docs if d.id not in held]
    groups: dict[str, list] = {}
    for d in train:
        groups.setdefault(f"lang_{d.meta['lang_hint']}", []).append(d)
        groups.setdefault(f"script_{detect_script(d.text)}", []).append(d)
    assert {"lang_en", "lang_zh", "lang_sw", "script_Latn", "script_Hani"} <= set(groups)
    for name, group in groups.items():
        tokens = sum(len(tok(d.text, add_special_tokens=False)["input_ids"]) for d in group)
        size = sum(len(d.text.encode("utf-8")) for d in group)
        chars, words = sum(len(d.text) for d in group), sum(len(d.text.split()) for d in group)
        assert result.metrics[f"bytes_per_token_{name}"] == size / tokens
        assert result.metrics[f"tokens_per_char_{name}"] == tokens / chars
        assert result.metrics.get(f"tokens_per_word_{name}") == (tokens / words if chars / words <= 15 else None)
    # every training document counted once per grouping: totals are conserved
    for grouping in (result.fertility.languages, result.fertility.scripts):
        assert sum(c.tokens for c in grouping.values()) == facts["train_tokens"] - facts["train_documents"]
        assert sum(c.bytes for c in grouping.values()) == result.metrics["train_bytes"]
        assert sum(c.documents for c in grouping.values()) == facts["train_documents"]


def test_rerun_is_identical(built, tmp_path):
    root, docs, source, result = built
    again = build_tokenizer_and_pack(source, str(tmp_path / "again"), TokenizerConfig(**CONFIG))
    for a, b in zip(result.manifest.shards, again.manifest.shards, strict=True):
        assert np.array_equal(np.load(a.uri), np.load(b.uri)) and a.sha256 == b.sha256
    assert again.manifest.facts["eval_digest"] == result.manifest.facts["eval_digest"]
    assert again.manifest.facts["tokenizer_digest"] == result.manifest.facts["tokenizer_digest"]
    # same data in a different output directory: only the URIs differ
    strip = lambda m: {k: v for k, v in m.facts.items() if not k.endswith("_uri")}
    assert strip(again.manifest) == strip(result.manifest)
    # same data, same place: byte-identical manifest
    rerun = build_tokenizer_and_pack(source, str(root / "out"), TokenizerConfig(**CONFIG))
    assert rerun.manifest.digest == result.manifest.digest


def test_shards_are_bounded(built, tmp_path):
    _, _, source, result = built
    small = build_tokenizer_and_pack(source, str(tmp_path / "o"), TokenizerConfig(**CONFIG, shard_sequences=10))
    arrays = [np.load(s.uri) for s in small.manifest.shards]
    assert [a.shape[0] for a in arrays[:-1]] == [10] * (len(arrays) - 1) and len(arrays) > 1
    assert np.array_equal(np.concatenate(arrays), np.concatenate([np.load(s.uri) for s in result.manifest.shards]))


def test_seed_changes_split_and_order(built, tmp_path):
    _, _, source, result = built
    other = build_tokenizer_and_pack(source, str(tmp_path / "o"), TokenizerConfig(**{**CONFIG, "seed": 4}))
    assert other.manifest.facts["eval_digest"] != result.manifest.facts["eval_digest"]


# --- errors ----------------------------------------------------------------------------


def test_vocab_too_large_for_corpus_is_an_error(tmp_path):
    source = write_corpus(tmp_path / "c", make_docs(20))
    with pytest.raises(VocabularyTooSmallError, match=r"vocab_size=5000.*Lower tokenizer.vocab_size to \d+"):
        build_tokenizer_and_pack(source, str(tmp_path / "o"), TokenizerConfig(**{**CONFIG, "vocab_size": 5000}))
    assert not (tmp_path / "o").exists()  # nothing published


def test_small_vocab_accepted_when_allowed():
    tok = train_bpe(["abc abc abd"], vocab_size=5000, min_frequency=1, min_vocab_fill=0.01)
    assert 257 < len(tok) < 5000


def test_not_even_one_sequence_is_an_error(tmp_path):
    source = write_corpus(tmp_path / "c", make_docs(60))
    cfg = TokenizerConfig(**{**CONFIG, "seq_len": 100_000})
    with pytest.raises(NotEnoughDataError, match=r"fewer than one sequence of seq_len=100000"):
        build_tokenizer_and_pack(source, str(tmp_path / "o"), cfg)


def test_no_training_documents_is_an_error(tmp_path):
    source = write_corpus(tmp_path / "c", [], parts=1)
    with pytest.raises(NotEnoughDataError, match="none left for training"):
        build_tokenizer_and_pack(source, str(tmp_path / "o"), TokenizerConfig(**CONFIG))


def test_wrong_manifest_kind(tmp_path, built):
    _, _, _, result = built
    with pytest.raises(ValueError, match="expected a 'documents' manifest"):
        build_tokenizer_and_pack(result.manifest_uri, str(tmp_path / "o"), TokenizerConfig(**CONFIG))


def test_config_validation():
    with pytest.raises(ValueError, match="eval_min_documents"):
        TokenizerConfig(eval_min_documents=10, eval_max_documents=5)


# --- reserved special tokens (a chat template's markers) -------------------------------

CHATML = ["<|im_start|>", "<|im_end|>"]
# sha256 of the files save_pretrained writes for train_bpe(make_docs() texts, vocab_size=300,
# min_frequency=2), computed with train_bpe as it was before special_tokens existed
# (git show f0f855a:components/tokenizer/train_bpe.py). A tokenizers/transformers upgrade that
# changes how these files are written needs them recomputed from that version.
TODAYS_TOKENIZER_SHA256 = {
    "tokenizer.json": "889a96a94868de2ce6a6e72574adacd095c8477335d51fdd47ee612922b3b29f",
    "tokenizer_config.json": "b9a92397ca0d5b310aa053f56798b3c0336cbae29bed716b3d62c26136315240",
}


def test_no_special_tokens_trains_todays_tokenizer(tmp_path):
    import hashlib

    texts = [d.text for d in make_docs()]
    train_bpe(texts, vocab_size=300, min_frequency=2, special_tokens=[]).save_pretrained(tmp_path)
    digests = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in TODAYS_TOKENIZER_SHA256}
    assert digests == TODAYS_TOKENIZER_SHA256
    assert TokenizerConfig().special_tokens == []


def test_reserved_special_tokens_are_single_ids_that_round_trip(tmp_path):
    import json

    texts = [d.text for d in make_docs()]
    plain = train_bpe(texts, vocab_size=300, min_frequency=2)
    train_bpe(texts, vocab_size=300, min_frequency=2, special_tokens=CHATML).save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)  # as the SFT step will load it
    assert len(tok) == 300 and tok.get_added_vocab() == {EOS_TOKEN: 0, "<|im_start|>": 1, "<|im_end|>": 2}
    for token, token_id in (("<|im_start|>", 1), ("<|im_end|>", 2)):
        assert tok.encode(token, add_special_tokens=False) == [token_id]
        assert tok.decode([token_id]) == token
    text = "<|im_start|>user\n人人生而自由<|im_end|>\n<|im_start|>assistant\nHabari<|im_end|>"
    ids = tok.encode(text, add_special_tokens=False)
    assert [i for i in ids if i in (1, 2)] == [1, 2, 1, 2] and tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "user\n人人生而自由\nassistant\nHabari"
    # each reserved token takes the slot of one merge: the same merges, the last two left out
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert merges == json.loads(plain.backend_tokenizer.to_str())["model"]["merges"][:-2]


def test_special_tokens_reach_the_trained_tokenizer_through_the_step(built, tmp_path):
    _, _, source, result = built
    chat = build_tokenizer_and_pack(source, str(tmp_path / "o"), TokenizerConfig(**CONFIG, special_tokens=CHATML))
    tok = AutoTokenizer.from_pretrained(chat.manifest.facts["tokenizer_uri"])
    assert [tok.encode(t, add_special_tokens=False) for t in CHATML] == [[1], [2]]
    assert chat.manifest.facts["tokenizer_digest"] != result.manifest.facts["tokenizer_digest"]


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        (["<|im_start|>", "<|im_start|>"], "'<|im_start|>' is listed 2 times"),
        ([""], "'' is not a non-empty token"),
        ([" <|im_end|>"], "' <|im_end|>' is not a non-empty token without surrounding spaces"),
        ([EOS_TOKEN], "<|endoftext|> is always reserved"),
    ],
)
def test_special_tokens_config_validation(tokens, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TokenizerConfig(special_tokens=tokens)
    with pytest.raises(ValueError, match=re.escape(message)):
        train_bpe(["abc abc"], vocab_size=300, min_frequency=1, special_tokens=tokens)
