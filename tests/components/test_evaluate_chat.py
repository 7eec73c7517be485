"""Chat evaluation (components/evaluate/chat.py): assistant-token bits per byte against a hand
computation, per language, the champion on the same conversations, windows over the context,
reasons for what is not scored, greedy and seeded replies, and results.json read by the register
step's gate and score cache.

Real conversations: chatterbot-corpus dialogues (the pinned wheel `make corpus` fetches, read as
pipelines/demo_corpus.py reads it), each YAML conversation's turns taken as user, assistant, ...
Three hand-made exchanges carry a control token of one tokenizer or both as text (as a chat log quoting them
does).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from components import shards
from components.evaluate import chat_report
from components.evaluate.chat import (
    ChampionScoresMismatch,
    ChatModelError,
    chat_model,
    evaluate_chat_model,
    generate_reply,
    load_chat_model,
    score_conversations,
    tokenise,
)
from components.evaluate.config import EvaluateConfig
from components.evaluate.step import EVAL_ROLE
from components.manifest import Manifest, shard_info
from components.register import registry
from components.register.card import model_card
from components.register.config import RegisterConfig
from components.sft.formats import Conversation
from components.sft.masking import IGNORE_INDEX, tokenise_conversation
from components.sft.template import IM_END, chat_template_for
from pipelines import demo_corpus
from pipelines.steps.register import champion_block
from tests.chat_model import tiny_chat_model

SOURCES = Path(__file__).resolve().parents[2] / ".cache" / "sources"
CONTEXT = 128  # the challenger's; en-0 (with its system turn) and en-10 (147 tokens) are longer
TOOL = "<tool_call>"  # a special token of the champion's tokenizer only
THINK = "<think>"  # and one of the challenger's only
# (chatterbot folder, language code, indices into its conversations.yml)
PICK = [("english", "en", [0, 3, 9, 10]), ("chinese", "zh", [3, 10]), ("german", "de", [3]),
        ("yoruba", "yo", [5, 7]), ("japanese", "ja", [16])]  # fmt: skip
CONFIG = EvaluateConfig(batch_size=4, max_new_tokens=12, chat_samples=3, temperature=0.8, chat_top_p=0.9, seed=5,
                        device="cpu")  # fmt: skip
CHAMPION_LABEL = "models:/chat@champion (version 7)"


def real_rows() -> list[dict]:
    wheel = zipfile.ZipFile(demo_corpus.fetch(demo_corpus.CHATTERBOT, SOURCES))
    rows = []
    for folder, lang, indices in PICK:
        data = yaml.safe_load(wheel.read(f"chatterbot_corpus/data/{folder}/conversations.yml").decode("utf-8"))
        for k in indices:
            turns = [t.strip() for t in data["conversations"][k] if isinstance(t, str) and t.strip()]
            turns = turns[: len(turns) // 2 * 2]
            messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
            rows.append({"id": f"{lang}-{k}", "messages": messages, "meta": {"lang": lang, "source_format": "openai"}})
    rows[0]["messages"].insert(0, {"role": "system", "content": "You are a friendly assistant."})
    return rows


def exchange(conversation_id: str, user: str, assistant: str) -> dict:
    return {"id": conversation_id, "messages": [{"role": "user", "content": user},
                                                {"role": "assistant", "content": assistant}], "meta": {"lang": "en"}}


MARKED = [  # both models refuse the first; only the champion the second; only the challenger the third
    exchange("en-markers", f"What does {IM_END} mean in a chat log?", "It closes a turn."),
    exchange("en-tool", f"Why do I see {TOOL} in replies?", "A model calls a tool there."),
    exchange("en-think", f"What is {THINK} for?", "Reasoning before the answer."),
]


def write_eval(root: Path, rows: list[dict], facts: dict | None = None) -> str:
    """A held-out set as the SFT data step writes it (eval/part-00000.jsonl.gz, eval/manifest.json)."""
    root.mkdir(parents=True)
    uri = str(root / "part-00000.jsonl.gz")
    n = shards.write_records(uri, rows)
    manifest_uri = str(root / "manifest.json")
    Manifest(kind="conversations", root=str(root), shards=[shard_info(uri, n)],
             facts=facts if facts is not None else {"role": EVAL_ROLE}).save(manifest_uri)  # fmt: skip
    return manifest_uri


def sharpened(model_dir: Path, seed: int) -> Path:
    """The model with its matrices drawn again at std 0.1: at the default 0.02 a two-layer model writes
    the same newlines after every prompt, and a reply test could not tell one prompt from another."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    model.save_pretrained(model_dir)
    return model_dir


def with_special_token(model_dir: Path, token: str) -> str:
    """The model's tokenizer with one more special token (content holding it cannot be rendered)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.add_special_tokens({"extra_special_tokens": [*tokenizer.extra_special_tokens, token]})
    tokenizer.save_pretrained(model_dir)
    return str(model_dir)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat-eval")
    rows = real_rows()
    return {
        "root": root,
        "rows": rows,
        "eval": write_eval(root / "eval", rows[:3] + MARKED + rows[3:]),
        "eval_clean": write_eval(root / "eval-clean", rows),
        "challenger": with_special_token(sharpened(tiny_chat_model(root / "challenger", seed=0, context=CONTEXT), 0),
                                         THINK),
        "champion": with_special_token(sharpened(tiny_chat_model(root / "champion", seed=1), 1), TOOL),  # context 256
    }


@pytest.fixture(scope="module")
def evaluated(world):
    """The challenger against the champion (scored, not cached) on the set with the marked conversations."""
    value = evaluate_chat_model(world["challenger"], world["eval"], str(world["root"] / "out"), CONFIG,
                                world["champion"], CHAMPION_LABEL, None, "7")  # fmt: skip
    return value, json.loads(Path(value.results_uri).read_text(encoding="utf-8"))


def hand_nll(model_dir: str, messages: list[dict], context: int) -> tuple[float, int]:
    """Nats of the labelled tokens from plain forward passes, and their count. A conversation over the
    context (at most two windows): the first `context` tokens predict positions 1..context, the last
    `context` inputs before the end predict the rest (the last window takes as much context as fits)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    conv = tokenise_conversation(tokenizer, messages, max_length=10**6,
                                 template=chat_template_for(tokenizer, end_of_turn=IM_END))  # fmt: skip
    # the labelled tokens spell each reply and its end of turn: the bytes divided by are those replies'
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert tokenizer.decode([t for t in conv.labels if t != IGNORE_INDEX]) == "".join(r + IM_END for r in replies)
    ids, labels = torch.tensor(conv.input_ids), torch.tensor(conv.labels)
    n = len(ids)
    assert n - 1 <= 2 * context
    with torch.no_grad():
        if n - 1 <= context:
            logits = model(ids[None]).logits[0, :-1]
            nll = F.cross_entropy(logits, labels[1:], ignore_index=IGNORE_INDEX, reduction="sum")
            return nll.item(), len(conv.labelled)
        first = model(ids[None, :context]).logits[0]
        last = model(ids[None, n - 1 - context : n - 1]).logits[0, context - (n - 1 - context) :]
    nll = F.cross_entropy(first, labels[1 : context + 1], ignore_index=IGNORE_INDEX, reduction="sum")
    nll += F.cross_entropy(last, labels[context + 1 :], ignore_index=IGNORE_INDEX, reduction="sum")
    return nll.item(), len(conv.labelled)


def reply_bytes(row: dict) -> int:
    return sum(len(m["content"].encode("utf-8")) for m in row["messages"] if m["role"] == "assistant")


def hand_figures(model_dir: str, rows: list[dict], context: int) -> dict[str, dict[str, float]]:
    """{"all" | lang: {bpb, loss, documents, bytes}} over `rows`."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        nll, labelled = hand_nll(model_dir, row["messages"], context)
        for key in ("all", row["meta"]["lang"]):
            acc = sums.setdefault(key, [0.0, 0, 0, 0])
            acc[0] += nll
            acc[1] += labelled
            acc[2] += reply_bytes(row)
            acc[3] += 1
    return {k: {"bpb": nll / math.log(2) / b, "loss": nll / t, "bytes": b, "documents": d, "tokens": t}
            for k, (nll, t, b, d) in sums.items()}  # fmt: skip


def test_bits_per_byte_is_the_replies_nats_over_their_bytes_overall_and_per_language(world, evaluated):
    _, results = evaluated
    scored = world["rows"]  # the marked conversations are out: a model refuses each
    hand = hand_figures(world["challenger"], scored, CONTEXT)
    assert results["kind"] == "chat"
    assert results["chat_template"] == {"source": "base", "mask_method": "generation", "end_of_turn": IM_END}
    m = results["metrics"]
    assert m["bits_per_byte"] == pytest.approx(hand["all"]["bpb"], abs=1e-6)
    assert m["loss"] == pytest.approx(hand["all"]["loss"], abs=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(hand["all"]["loss"]), rel=1e-6)
    assert (m["tokens"], m["bytes"], m["documents"]) == (hand["all"]["tokens"], hand["all"]["bytes"], len(scored))
    assert sorted(results["per_language"]) == ["de", "en", "ja", "yo", "zh"]
    for lang, figures in results["per_language"].items():
        assert figures["bits_per_byte"] == pytest.approx(hand[lang]["bpb"], abs=1e-6), lang
        assert (figures["documents"], figures["bytes"]) == (hand[lang]["documents"], hand[lang]["bytes"])
    assert results["conversations"] == {
        "total": 13, "scored": 10, "over_context": 2, "over_context_ids": ["en-0", "en-10"],
        "unscored": {"champion_control_token_in_content": 1, "control_token_in_content": 2},
        "unscored_ids": {"champion_control_token_in_content": ["en-tool"],
                         "control_token_in_content": ["en-markers", "en-think"]},
    }  # fmt: skip


def test_the_champion_is_scored_on_exactly_the_same_conversations(world, evaluated):
    value, results = evaluated
    champion = results["champion"]
    hand = hand_figures(world["champion"], world["rows"], 256)
    assert (champion["model_uri"], champion["version"]) == (CHAMPION_LABEL, "7")
    assert champion["metrics"]["bits_per_byte"] == pytest.approx(hand["all"]["bpb"], abs=1e-6)
    assert champion["metrics"]["documents"] == results["metrics"]["documents"] == 10
    assert champion["metrics"]["bytes"] == results["metrics"]["bytes"]
    for lang, figures in champion["per_language"].items():
        assert figures["bits_per_byte"] == pytest.approx(hand[lang]["bpb"], abs=1e-6), lang
    # its longer context takes en-0 and en-10 whole; it refuses en-markers and en-tool, and en-think, which it
    # takes, is left out as the challenger refuses it
    assert champion["conversations"] == {"over_context": 0, "refused": {"control_token_in_content": 2}}
    assert value.metrics["bits_per_byte_delta"] == pytest.approx(results["metrics"]["bits_per_byte"]
                                                                 - hand["all"]["bpb"], abs=1e-6)  # fmt: skip


def test_a_conversation_over_the_context_is_windowed_like_a_long_document(world):
    """stride 1: each labelled token predicted from the `context` tokens before it (brute force)."""
    chat = load_chat_model(world["challenger"], "challenger", torch.device("cpu"))
    (row,) = [r for r in world["rows"] if r["id"] == "en-10"]
    tokenised, refused = tokenise(chat, [Conversation(row["id"], row["messages"], row["meta"])])
    ids = tokenised[0].input_ids
    assert not refused and len(ids) - 1 > CONTEXT
    scores = score_conversations(chat, tokenised, batch_size=8, stride=1, device=torch.device("cpu"))
    expected = 0.0
    with torch.no_grad():
        for p in tokenised[0].labelled:
            logits = chat.model(torch.tensor([ids[max(0, p - CONTEXT) : p]])).logits[0, -1]
            expected -= torch.log_softmax(logits, -1)[ids[p]].item()
    assert scores[0].nll == pytest.approx(expected, abs=1e-4)
    assert (scores[0].labelled, scores[0].windows) == (len(tokenised[0].labelled), len(ids) - CONTEXT)


def plain_reply(model_dir: str, messages: list[dict], context: int, **generate) -> str:
    """model.generate on the prompt rendered by the tokenizer's own template (its last tokens, so that
    the reply fits the context), cut at the first eos id."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    prompt = prompt[:, -(context - CONFIG.max_new_tokens) :]
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=CONFIG.max_new_tokens,
                         **generate)[0, prompt.shape[1] :]  # fmt: skip
    stops = model.generation_config.eos_token_id  # [<|endoftext|>, <|im_end|>]
    ends = [i for i, t in enumerate(out.tolist()) if t in stops]
    return tokenizer.decode(out[: ends[0]] if ends else out, skip_special_tokens=True)


def test_replies_greedy_equal_generate_and_sampled_replay_with_the_seed(world, evaluated):
    value, results = evaluated
    samples = results["samples"]
    assert json.loads(Path(value.results_uri).with_name("samples.json").read_text(encoding="utf-8")) == samples
    rows = {r["id"]: r for r in world["rows"]}
    assert [s["id"] for s in samples] == ["en-0", "en-3", "en-9"]  # the first scored conversations
    for s in samples:
        prompt, reference = rows[s["id"]]["messages"][:-1], rows[s["id"]]["messages"][-1]["content"]
        assert s["reference"] == reference and s["prompt"].endswith(f"user: {prompt[-1]['content']}")
        assert s["greedy"] == plain_reply(world["challenger"], prompt, CONTEXT, do_sample=False)
        assert s["champion_greedy"] == plain_reply(world["champion"], prompt, 256, do_sample=False)
        torch.manual_seed(CONFIG.seed)
        sampling = dict(do_sample=True, temperature=CONFIG.temperature, top_p=CONFIG.chat_top_p, top_k=0)
        assert s["sampled"] == plain_reply(world["challenger"], prompt, CONTEXT, **sampling)
    # en-0's prompt (its system turn and two exchanges) leaves fewer than 12 tokens of the context: it is cut
    assert [s["prompt_cut"] for s in samples] == [True, False, False]
    # replies differ by prompt (a model writing the same thing after any prompt would prove nothing here)
    assert len({s["greedy"] for s in samples}) == len({s["sampled"] for s in samples}) == 3
    chat = load_chat_model(world["challenger"], "challenger", torch.device("cpu"))
    prompt = rows["en-3"]["messages"][:-1]
    again = [generate_reply(chat, prompt, max_new_tokens=12, device=torch.device("cpu"), sample=True,
                            temperature=0.8, top_p=0.9, seed=seed)["text"] for seed in (5, 5, 6)]  # fmt: skip
    assert again[0] == again[1] == samples[1]["sampled"] != again[2]


def test_the_end_of_turn_is_read_from_the_template(world):
    """ChatML's <|im_end|> closes a turn although the tokenizer's eos_token is <|endoftext|> (a model
    trained here, tuned again), also when the generation config does not list it; generation then
    stops there too."""
    model = AutoModelForCausalLM.from_pretrained(world["challenger"])
    tokenizer = AutoTokenizer.from_pretrained(world["challenger"])
    assert tokenizer.eos_token == "<|endoftext|>" and chat_template_for(tokenizer).end_of_turn == IM_END
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    chat = chat_model(model, tokenizer, "challenger")
    assert chat.template.end_of_turn == IM_END
    assert chat.stop_ids == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]


def test_a_reply_stops_at_the_end_of_turn_token(world):
    chat = load_chat_model(world["challenger"], "challenger", torch.device("cpu"))
    head = torch.nn.Linear(chat.model.config.hidden_size, chat.model.config.vocab_size)
    with torch.no_grad():  # a head that always writes <|im_end|>, not the tokenizer's eos_token
        head.weight.zero_()
        head.bias.zero_()
        head.bias[chat.tokenizer.convert_tokens_to_ids(IM_END)] = 1.0
    chat.model.lm_head = head
    reply = generate_reply(chat, world["rows"][1]["messages"][:-1], max_new_tokens=12, device=torch.device("cpu"))
    assert reply == {"text": "", "stopped": True, "prompt_cut": False}


def test_results_feed_the_register_gate_its_card_and_the_score_cache(world, evaluated):
    value, results = evaluated
    uri = value.results_uri
    block, unscored = champion_block(results, uri, "7")  # the registry's champion is version 7
    assert unscored is None and block["metrics"]["bits_per_byte"] == value.champion_metrics["bits_per_byte"]
    languages = lambda b: {lang: m["bits_per_byte"] for lang, m in b["per_language"].items()}  # noqa: E731
    config = RegisterConfig(model_name="chat", min_improvement=0.01, max_language_regression=0.02)
    mine, theirs = languages(results), languages(block)
    decision = registry.decide(results["metrics"]["bits_per_byte"], block["metrics"]["bits_per_byte"], config, mine,
                               theirs)  # fmt: skip
    assert [r["passed"] for r in decision.rows] == [
        results["metrics"]["bits_per_byte"] < block["metrics"]["bits_per_byte"] * 0.99,
        *[mine[lang] <= theirs[lang] * 1.02 for lang in ("de", "en", "ja", "yo", "zh")],
    ]
    other, why = champion_block(results, uri, "8")  # scores of another version than the registry's champion
    assert other == {} and why.startswith(f"{uri} scores the champion {CHAMPION_LABEL!r}, not the current champion")
    # register caches under results' stride; evaluate looks up under the config's: the same key
    assert results["config"]["stride"] is None and results["eval_digest"] == Manifest.load(world["eval"]).digest
    assert registry.eval_cache_key(results["eval_digest"], results["config"]["stride"]) == registry.eval_cache_key(
        Manifest.load(world["eval"]).digest, CONFIG.stride)
    assert "| en | 4 |" in model_card("chat", "8", results, decision.markdown(), {})
    assert value.metrics["conversations_unscored"] == 3 and value.metrics["unscored_control_token_in_content"] == 2
    page = chat_report.report_html(results, [3.0, 2.0], decision.markdown())
    assert "<h1>Chat evaluation</h1>" in page and page.endswith("</body></html>") and "<svg" in page
    assert "10 of 13 held-out conversations scored" in page and "It closes a turn" not in page
    assert "A model calls a tool" not in value.report_markdown and "`en-markers`" in value.report_markdown
    for s in results["samples"]:
        assert s["reference"] in value.report_markdown


def test_cached_champion_scores_are_used_only_on_the_same_set(world, evaluated):
    _, first = evaluated
    cached = {"metrics": first["champion"]["metrics"], "per_language": first["champion"]["per_language"]}
    out = str(world["root"] / "cached")
    # the challenger refuses two: the champion's scores on ten are not known to be on the same ten
    with pytest.raises(ChampionScoresMismatch, match=r"cover 10 of the 13 .* scored on 11: not the same set"):
        evaluate_chat_model(world["challenger"], world["eval"], out, CONFIG, None, CHAMPION_LABEL, cached, "7")
    # with the champion's directory it is scored again, on the same conversations as before
    value = evaluate_chat_model(world["challenger"], world["eval"], out, CONFIG, world["champion"], CHAMPION_LABEL,
                                cached, "7")  # fmt: skip
    again = json.loads(Path(value.results_uri).read_text(encoding="utf-8"))
    assert "cached" not in again["champion"] and again["champion"]["metrics"] == first["champion"]["metrics"]
    assert again["samples"] == first["samples"]  # greedy and seeded replies are reproducible
    # a set both take whole: scores from one run are reused by the next, as register caches them
    fresh = evaluate_chat_model(world["challenger"], world["eval_clean"], out, CONFIG, world["champion"],
                                CHAMPION_LABEL, None, "7")  # fmt: skip
    scores = json.loads(Path(fresh.results_uri).read_text(encoding="utf-8"))["champion"]
    tag = json.loads(json.dumps({"metrics": scores["metrics"], "per_language": scores["per_language"]}))
    reused = evaluate_chat_model(world["challenger"], world["eval_clean"], out, CONFIG, None, CHAMPION_LABEL, tag, "7")
    results = json.loads(Path(reused.results_uri).read_text(encoding="utf-8"))
    assert results["champion"] == {"model_uri": CHAMPION_LABEL, "cached": True, "version": "7", **tag}
    assert reused.metrics["bits_per_byte_delta"] == fresh.metrics["bits_per_byte_delta"]
    assert champion_block(results, reused.results_uri, "7")[1] is None


def test_a_base_model_champion_is_refused_by_name(world):
    base = str(tiny_chat_model(world["root"] / "base", seed=2, with_template=False))
    with pytest.raises(ChatModelError, match=r"models:/chat@champion \(version 7\) is not a chat model.*"
                                             r"another registry\.model_name"):  # fmt: skip
        evaluate_chat_model(world["challenger"], world["eval"], str(world["root"] / "base-out"), CONFIG, base,
                            CHAMPION_LABEL, None, "7")  # fmt: skip


def test_only_held_out_conversations_are_evaluated(world, tmp_path):
    training = write_eval(tmp_path / "train", world["rows"][:2], facts={"eval_conversations": 2})
    with pytest.raises(ValueError, match=r"not the held-out conversations \(kind='conversations', facts.role=None"):
        evaluate_chat_model(world["challenger"], training, str(tmp_path / "out"), CONFIG)
