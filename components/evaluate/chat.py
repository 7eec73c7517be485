"""Evaluate a chat model on the held-out conversations, in evaluate_model's contract.

    result = evaluate_chat_model("runs/x/sft-train/model", "runs/x/sft-data/eval/manifest.json", "runs/x/evaluate",
                                 EvaluateConfig())

results.json has the keys pretraining's evaluate writes (components/evaluate/step.py: metrics with
bits_per_byte, loss, perplexity; per_language; per_source; eval_digest; config with stride; the
champion block with version, model_uri, metrics, per_language; samples; metrics_flat), so the
register step's gate and score cache read it unchanged, plus "kind": "chat", "conversations"
(how many were scored, scored in windows, or not scored and why) and "chat_template".

What is scored. Each held-out conversation is rendered with the model's own chat template and its
assistant tokens labelled by components/sft/masking.tokenise_conversation, exactly as SFT trains
on it: each assistant turn's content and the end-of-turn token closing it; system and user turns
and the template's scaffolding are context only. Per model:

    loss           nats per labelled token (mean over every labelled token of the set)
    perplexity     exp(loss)
    bits_per_byte  sum of the labelled tokens' nats / ln 2 / UTF-8 bytes of the assistant turns' contents

Why these bytes: the labelled tokens' nats are -ln P(every reply, each followed by its end of turn
| the conversation before it). By the chain rule that is the model's code length for the replies
and for where each one stops, whatever pieces its tokenizer cuts them into; the UTF-8 bytes of the
replies' contents (the canonical records' "content" strings) are a property of the data. So a
champion with another tokenizer or template is measured on the same quantity, as lm-eval's
bits_per_byte (the Pile paper's "bits per UTF-8 encoded byte", Gao et al. 2020) divides a
document's log-likelihood by its bytes. The end-of-turn token's nats count (SFT trains it: a model
that does not stop pays here) but its bytes do not: its spelling differs between templates
(<|im_end|>, <|eot_id|>), and every model makes that one decision per turn. A template that
rewrites the content (trims it, adds text inside the assistant's span) scores what it renders,
over the same bytes. `tokens` in the figures counts labelled tokens, `bytes` and `chars` the
replies' contents, `documents` conversations.

Longer than the context. A conversation whose tokens do not fit one forward pass of the model is
scored in rolling windows as pretraining scores a long document (scoring.rolling_windows, the
evaluate.stride; every token predicted once): it stays in the set, counted in
conversations.over_context. So the model's context never changes which conversations are scored,
and a champion with another context is compared on the same set.

Not scored. A conversation the model's template or tokenizer cannot take (masking's
ConversationError reasons, e.g. control_token_in_content: a reply holding "<|im_end|>" as text;
or a template that raises) is counted under conversations.unscored by reason, its id listed.
The champion is scored on exactly the conversations both models take: one that only the champion
refuses is counted as "champion_<reason>" and left out of both. Cached champion scores
(`champion_scores`) are used only when they and the challenger cover the whole set; otherwise,
with `champion_uri` the champion is scored again, without it ChampionScoresMismatch is raised.

Output under `output_uri`: results.json, samples.json, report.md (chat_report.render_chat_report;
the step writes chat_report.report_html's page as report.html).
"""

from __future__ import annotations

import inspect
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jinja2.exceptions import TemplateError

from components.evaluate.chat_report import render_chat_report
from components.evaluate.config import EvaluateConfig
from components.evaluate.scoring import ScoreResult, Totals, right_padded, rolling_windows
from components.evaluate.step import (
    EVAL_ROLE, EvalResult, _block, _device, flat_metrics, load_model, write_results
)  # fmt: skip
from components.hf_model import context_length
from components.manifest import Manifest, file_digest
from components.sft.clean import KIND as CONVERSATIONS_KIND
from components.sft.formats import Conversation, iter_conversations
from components.sft.masking import IGNORE_INDEX, ConversationError, TokenisedConversation, tokenise_conversation
from components.sft.template import ChatTemplate, chat_template_for, end_of_turn_token

KIND = "chat"  # results.json "kind"
MAX_IDS_LISTED = 20  # unscored conversation ids listed per reason


class ChatModelError(ValueError):
    """The model is not a chat model (no chat template) or its template cannot be used."""


class ChampionScoresMismatch(ValueError):
    """Cached champion scores cover another set of conversations than the challenger's scores."""


@dataclass
class ChatModel:
    """A loaded chat model: its template (with the end-of-turn token found for it) and the token
    ids its generation stops at."""

    label: str
    model: Any
    tokenizer: Any
    template: ChatTemplate
    stop_ids: list[int]


@dataclass
class ConversationScore:
    """One conversation scored by one model: nats over its labelled tokens, their count, the
    forwarded tokens and windows it took."""

    nll: float = 0.0
    labelled: int = 0
    forwarded: int = 0
    windows: int = 0


@dataclass
class ChatScores:
    """Per conversation index: its score, or the reason it could not be scored."""

    scores: dict[int, ConversationScore] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0


# ---- the eval set ------------------------------------------------------------------------------


def load_eval_conversations(eval_manifest_uri: str) -> tuple[Manifest, list[Conversation]]:
    """The held-out conversations, after checking each shard still matches its recorded digest.

    Raises ValueError naming the file when it is not a held-out conversation set (kind
    'conversations', facts.role == EVAL_ROLE, as the SFT data step writes eval/manifest.json): the
    training conversations would score as if unseen, and a documents set has no replies."""
    manifest = Manifest.load(eval_manifest_uri)
    if manifest.kind != CONVERSATIONS_KIND or manifest.facts.get("role") != EVAL_ROLE:
        found = f"kind={manifest.kind!r}, facts.role={manifest.facts.get('role')!r}"
        raise ValueError(
            f"{eval_manifest_uri}: not the held-out conversations ({found}; expected kind={CONVERSATIONS_KIND!r}, "
            f"facts.role={EVAL_ROLE!r}). Pass the SFT data step's held-out set (`homegrown sft-data --output DIR` "
            "writes DIR/eval/manifest.json); a base model's documents are scored by evaluate_model"
        )
    for shard in manifest.shards:
        sha, _ = file_digest(shard.uri)
        if sha != shard.sha256:
            raise ValueError(f"{shard.uri}: content changed since {eval_manifest_uri} was written (sha256 mismatch)")
    conversations = list(iter_conversations([s.uri for s in manifest.shards]))
    if not conversations:
        raise ValueError(f"{eval_manifest_uri}: no held-out conversations; hold some out in the SFT data step "
                         "(sft.clean.eval_fraction, eval_min_conversations)")  # fmt: skip
    return manifest, conversations


def reply_text(conversation: Conversation) -> str:
    """The assistant turns' contents, concatenated: the text whose UTF-8 bytes bits_per_byte divides by."""
    return "".join(m["content"] for m in conversation.messages if m["role"] == "assistant")


# ---- the model ---------------------------------------------------------------------------------


def _eos_ids(model, tokenizer) -> list[int]:
    """The generation config's eos ids (int or list), then the tokenizer's eos, without repeats."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return list(dict.fromkeys(int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None))


def chat_model(model, tokenizer, label: str) -> ChatModel:
    """The model with its own chat template and the token that closes an assistant turn in it
    (template.end_of_turn_token), e.g. <|im_end|> for ChatML where the tokenizer's eos_token is <|endoftext|>
    (chat_template_for alone would take the eos_token). Generation stops at the generation config's
    eos ids, the tokenizer's eos and that token.

    Raises ChatModelError naming `label` when the tokenizer has no chat_template (a base model) or
    the template cannot be used."""
    own = getattr(tokenizer, "chat_template", None)
    if not own:
        raise ChatModelError(
            f"{label} is not a chat model: its tokenizer has no chat_template, so held-out conversations cannot be "
            "rendered as it would answer them. A base model is scored on documents (evaluate_model); register chat "
            "models under another registry.model_name than base models, so that neither is gated against the other"
        )
    stop_ids = _eos_ids(model, tokenizer)
    text = own["default"] if isinstance(own, dict) and "default" in own else own
    eot = end_of_turn_token(tokenizer, text, stop_ids) if isinstance(text, str) else None
    try:
        template = chat_template_for(tokenizer, end_of_turn=eot)
    except ValueError as exc:
        raise ChatModelError(f"{label}: its chat template cannot be used: {exc}") from exc
    eot_id = tokenizer.convert_tokens_to_ids(template.end_of_turn)
    if eot_id not in stop_ids:
        stop_ids.append(eot_id)
    return ChatModel(label, model, tokenizer, template, stop_ids)


def load_chat_model(model_uri: str, label: str, device: torch.device) -> ChatModel:
    """load_model (a Hugging Face directory, local or s3://) checked to be a chat model."""
    with tempfile.TemporaryDirectory(prefix="homegrown-eval-model-") as tmp:
        model, tokenizer = load_model(model_uri, Path(tmp), device)
    return chat_model(model, tokenizer, label)


# ---- scoring -----------------------------------------------------------------------------------


def tokenise(
    chat: ChatModel, conversations: list[Conversation]
) -> tuple[dict[int, TokenisedConversation], dict[int, str]]:
    """Each conversation rendered and labelled with the model's template, never cut (a long one is
    windowed when scored); the ones it cannot take by index with masking's reason ("template_error"
    when the template itself raises)."""
    done: dict[int, TokenisedConversation] = {}
    refused: dict[int, str] = {}
    for index, conv in enumerate(conversations):
        try:
            done[index] = tokenise_conversation(chat.tokenizer, conv.messages, max_length=sys.maxsize,
                                                template=chat.template, conversation_id=conv.id)  # fmt: skip
        except ConversationError as exc:
            refused[index] = exc.reason
        except TemplateError:
            refused[index] = "template_error"
    return done, refused


@dataclass
class _Window:
    index: int  # the conversation's
    inputs: list[int]
    positions: list[int]  # positions of `inputs` whose next-token prediction is scored
    targets: list[int]  # the labelled tokens they predict


def _windows(index: int, conv: TokenisedConversation, max_len: int, stride: int) -> list[_Window]:
    """The model inputs that predict every token of the conversation once (one window when it fits
    the context, rolling windows otherwise), each with the labelled tokens it predicts (maybe none)."""
    ids, labels = conv.input_ids, conv.labels
    out, end = [], 0
    for inputs, n in rolling_windows(ids[1:], ids[0], max_len, context_len=max_len - stride + 1):
        # the window's last n inputs predict stream positions end+1 .. end+n
        offset = len(inputs) - n
        picked = [k for k in range(n) if labels[end + 1 + k] != IGNORE_INDEX]
        out.append(_Window(index, inputs, [offset + k for k in picked], [ids[end + 1 + k] for k in picked]))
        end += n
    return out


def _takes_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.inference_mode()
def _score_batch(model, batch: list[_Window], device: torch.device, pad_id: int) -> list[float]:
    """Nats of each window's targets, right-padded inputs under an attention mask."""
    ids, mask = right_padded([w.inputs for w in batch], pad_id)
    # only the scored positions go through the head (a vocabulary of 50k+ makes full logits the
    # largest tensor), through the model's own logits_to_keep where it has one (softcapping, scaling)
    keep = sorted({p for w in batch for p in w.positions})
    extra: dict[str, Any] = {}
    column = {p: p for p in keep}
    if _takes_logits_to_keep(model):
        extra["logits_to_keep"] = torch.tensor(keep, device=device)
        column = {p: c for c, p in enumerate(keep)}
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits
    out = []
    for i, w in enumerate(batch):
        rows = torch.log_softmax(logits[i, [column[p] for p in w.positions]].float(), dim=-1)
        targets = torch.tensor(w.targets, device=rows.device)
        out.append(-rows.gather(1, targets[:, None]).double().sum().item())
    return out


def score_conversations(
    chat: ChatModel,
    tokenised: dict[int, TokenisedConversation],
    *,
    batch_size: int,
    stride: int | None,
    device: torch.device,
) -> dict[int, ConversationScore]:
    """Nats over each conversation's labelled tokens (each predicted from every token before it
    that fits the context). Windows are batched by length, longest first, so padding stays small."""
    max_len = context_length(chat.model)
    stride = stride or max_len
    if stride > max_len:
        raise ValueError(f"evaluate.stride={stride} exceeds {chat.label}'s context of {max_len} tokens; lower it")
    pad_id = chat.tokenizer.pad_token_id if chat.tokenizer.pad_token_id is not None else chat.stop_ids[0]
    scores = {index: ConversationScore() for index in tokenised}
    windows = []
    for index, conv in tokenised.items():
        mine = _windows(index, conv, max_len, stride)
        scores[index].windows = len(mine)
        windows += [w for w in mine if w.targets]
    windows.sort(key=lambda w: -len(w.inputs))
    chat.model.eval()
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        for w, nll in zip(batch, _score_batch(chat.model, batch, device, pad_id)):
            score = scores[w.index]
            score.nll += nll
            score.labelled += len(w.targets)
            score.forwarded += len(w.inputs)
    return scores


def _totals(conversations: list[Conversation], scores: dict[int, ConversationScore], indices: list[int]) -> ScoreResult:
    """Overall, per meta lang and per meta source, over the conversations `indices`."""
    result = ScoreResult(total=Totals())
    for index in indices:
        conv, score = conversations[index], scores[index]
        reply = reply_text(conv)
        totals = Totals(nll=score.nll, tokens=score.labelled, bytes=len(reply.encode("utf-8")), documents=1,
                        chars=len(reply), words=len(reply.split()))  # fmt: skip
        result.total.add(totals)
        if lang := conv.meta.get("lang"):
            result.per_language.setdefault(str(lang), Totals()).add(totals)
        if source := conv.meta.get("source"):
            result.per_source.setdefault(str(source), Totals()).add(totals)
    result.per_language = dict(sorted(result.per_language.items()))
    result.per_source = dict(sorted(result.per_source.items()))
    return result


def _score_model(chat: ChatModel, conversations: list[Conversation], config: EvaluateConfig,
                 device: torch.device) -> ChatScores:  # fmt: skip
    started = time.perf_counter()
    tokenised, refused = tokenise(chat, conversations)
    scores = score_conversations(chat, tokenised, batch_size=config.batch_size, stride=config.stride, device=device)
    return ChatScores(scores, refused, time.perf_counter() - started)


# ---- replies -----------------------------------------------------------------------------------


def prompt_messages(conversation: Conversation) -> tuple[list[dict[str, str]], str]:
    """The conversation before its last assistant turn, and that turn's content (the reference)."""
    last = max(i for i, m in enumerate(conversation.messages) if m["role"] == "assistant")
    return conversation.messages[:last], conversation.messages[last]["content"]


def _as_text(messages: list[dict[str, str]]) -> str:
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


@torch.inference_mode()
def generate_reply(
    chat: ChatModel,
    messages: list[dict[str, str]],
    *,
    max_new_tokens: int,
    device: torch.device,
    sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> dict[str, Any]:
    """The model's next assistant turn after `messages`, rendered with its template and its
    generation prompt; it stops at chat.stop_ids (the generation config's eos ids and the template's
    end-of-turn) or after max_new_tokens (fewer when the context is shorter). A prompt longer than
    the context keeps its last tokens. Sampling reseeds with `seed` first, so one reply does not
    depend on the others. Returns {text, stopped (an end token was generated), prompt_cut}."""
    ids = list(chat.tokenizer.apply_chat_template(messages, chat_template=chat.template.template,
                                                  add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])  # fmt: skip
    max_len = context_length(chat.model)
    new_tokens = min(max_new_tokens, max_len - 1)
    kept = ids[-(max_len - new_tokens) :]
    input_ids = torch.tensor([kept], device=device)
    settings: dict[str, Any] = {"do_sample": False}
    if sample:
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
        settings = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    out = chat.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                              max_new_tokens=new_tokens, eos_token_id=chat.stop_ids, pad_token_id=chat.stop_ids[0],
                              **settings)[0, len(kept) :].tolist()  # fmt: skip
    ends = [i for i, token in enumerate(out) if token in chat.stop_ids]
    reply = out[: ends[0]] if ends else out
    return {"text": chat.tokenizer.decode(reply, skip_special_tokens=True), "stopped": bool(ends),
            "prompt_cut": len(kept) < len(ids)}  # fmt: skip


def chat_samples(chat: ChatModel, conversations: list[Conversation], indices: list[int], config: EvaluateConfig,
                 device: torch.device, champion: ChatModel | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per conversation of `indices`: its prompt (as text), reference reply, the model's greedy and
    seeded sampled replies, and the champion's greedy reply when a champion model is given."""
    out = []
    for index in indices:
        conv = conversations[index]
        messages, reference = prompt_messages(conv)
        common = dict(max_new_tokens=config.max_new_tokens, device=device)
        greedy = generate_reply(chat, messages, **common)
        sampled = generate_reply(chat, messages, sample=True, temperature=config.temperature, top_p=config.chat_top_p,
                                 seed=config.seed, **common)  # fmt: skip
        row = {"id": conv.id, "lang": conv.meta.get("lang"), "prompt": _as_text(messages), "reference": reference,
               "greedy": greedy["text"], "greedy_stopped": greedy["stopped"], "sampled": sampled["text"],
               "sampled_stopped": sampled["stopped"], "prompt_cut": greedy["prompt_cut"]}  # fmt: skip
        if champion is not None:
            theirs = generate_reply(champion, messages, **common)
            row.update(champion_greedy=theirs["text"], champion_greedy_stopped=theirs["stopped"])
        out.append(row)
    return out


# ---- the step ----------------------------------------------------------------------------------


def _counts(conversations: list[Conversation], unscored: dict[int, str], over: list[int]) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    for index, reason in sorted(unscored.items()):
        reasons[reason] = reasons.get(reason, 0) + 1
        if len(ids.setdefault(reason, [])) < MAX_IDS_LISTED:
            ids[reason].append(conversations[index].id)
    return {"total": len(conversations), "scored": len(conversations) - len(unscored), "over_context": len(over),
            "over_context_ids": [conversations[i].id for i in over[:MAX_IDS_LISTED]],
            "unscored": dict(sorted(reasons.items())), "unscored_ids": dict(sorted(ids.items()))}  # fmt: skip


def _template_facts(chat: ChatModel) -> dict[str, str]:
    return {"source": chat.template.source, "mask_method": chat.template.mask_method,
            "end_of_turn": chat.template.end_of_turn}  # fmt: skip


def evaluate_chat_model(
    model_uri: str,
    eval_manifest_uri: str,
    output_uri: str,
    config: EvaluateConfig,
    champion_uri: str | None = None,
    champion_label: str | None = None,
    champion_scores: dict[str, Any] | None = None,
    champion_version: str | None = None,
) -> EvalResult:
    """Score the chat model (and the champion) on the held-out conversations of `eval_manifest_uri`;
    write results.json, samples.json and report.md under `output_uri`. The arguments are
    evaluate_model's: champion_scores, the champion's cached {"metrics", "per_language"} on this
    set; champion_version, recorded in the champion block as "version".

    With both champion_scores and champion_uri, the cached scores are used when they cover the same
    conversations (the whole set, as the challenger's) and the champion model only generates its
    replies; otherwise it is scored again. Raises ValueError for an eval set that is not held-out
    conversations, ChatModelError for a model or champion without a chat template,
    ChampionScoresMismatch for cached scores over another set without champion_uri to score it
    again, RuntimeError when the champion cannot be loaded or nothing can be scored."""
    device = _device(config)
    eval_manifest, conversations = load_eval_conversations(eval_manifest_uri)
    challenger = load_chat_model(model_uri, model_uri, device)
    champion_name = champion_label or champion_uri or "champion"
    champion: ChatModel | None = None
    if champion_uri and config.compare_champion:  # loaded first: a champion that is no chat model fails fast
        try:
            champion = load_chat_model(champion_uri, champion_name, device)
        except ChatModelError:
            raise
        except Exception as exc:  # the gate must not decide without the champion's figures
            raise RuntimeError(
                f"the champion {champion_name} cannot be evaluated: {exc}; fix it or move the champion alias to a "
                "loadable version (or set evaluate.compare_champion: false)"
            ) from exc
    mine = _score_model(challenger, conversations, config, device)

    theirs: ChatScores | None = None
    use_cache = champion_scores is not None and config.compare_champion
    if use_cache and (mine.refused or champion_scores["metrics"].get("documents") != len(conversations)):
        if champion is None:
            cached = champion_scores["metrics"].get("documents")
            covered = "an unknown number" if cached is None else int(cached)
            raise ChampionScoresMismatch(
                f"the cached scores of {champion_name} cover {covered} of the {len(conversations)} held-out "
                f"conversations and {model_uri} can be scored on {len(conversations) - len(mine.refused)}: not the "
                "same set. Pass the champion's model directory (champion_uri) to score it again on the conversations "
                "both take"
            )
        use_cache = False
    if champion is not None and not use_cache:
        theirs = _score_model(champion, conversations, config, device)

    unscored = dict(mine.refused)
    if theirs is not None:
        unscored.update({i: f"champion_{reason}" for i, reason in theirs.refused.items() if i not in unscored})
    scored = [i for i in range(len(conversations)) if i not in unscored]
    if not scored:
        raise RuntimeError(f"none of the {len(conversations)} held-out conversations could be scored: "
                           f"{_counts(conversations, unscored, [])['unscored']}")  # fmt: skip
    totals = _totals(conversations, mine.scores, scored)
    over = [i for i in scored if mine.scores[i].windows > 1]
    results: dict[str, Any] = {
        "kind": KIND,
        **_block(model_uri, totals),
        "eval_manifest_uri": eval_manifest_uri,
        "eval_digest": eval_manifest.digest,
        "config": config.model_dump(mode="json"),
        "conversations": _counts(conversations, unscored, over),
        "chat_template": _template_facts(challenger),
    }
    results["samples"] = chat_samples(challenger, conversations, scored[: config.chat_samples], config, device,
                                      champion)  # fmt: skip

    metrics = flat_metrics(results)
    counts = results["conversations"]
    metrics.update(conversations_total=counts["total"], conversations_scored=counts["scored"],
                   conversations_unscored=counts["total"] - counts["scored"],
                   conversations_over_context=counts["over_context"])  # fmt: skip
    metrics.update({f"unscored_{reason}": n for reason, n in counts["unscored"].items()})
    forwarded = sum(mine.scores[i].forwarded for i in mine.scores)
    metrics["eval_seconds"] = mine.seconds
    metrics["eval_tokens_per_s"] = forwarded / mine.seconds if mine.seconds > 0 else 0.0

    if use_cache:
        results["champion"] = {"model_uri": champion_name, "cached": True, "metrics": champion_scores["metrics"],
                               "per_language": champion_scores["per_language"]}  # fmt: skip
    elif theirs is not None:
        assert champion is not None
        results["champion"] = {
            **_block(champion_name, _totals(conversations, theirs.scores, scored)),
            "conversations": {"over_context": sum(1 for i in scored if theirs.scores[i].windows > 1),
                              "refused": _counts(conversations, theirs.refused, [])["unscored"]},
            "chat_template": _template_facts(champion),
        }  # fmt: skip
    return write_results(output_uri, results, metrics, champion_version, render_chat_report)
