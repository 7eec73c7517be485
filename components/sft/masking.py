"""One conversation -> the token ids a causal LM trains on and the labels its loss reads.

labels[i] = input_ids[i] where token i is written by the assistant (its content and the
end-of-turn token that closes its turn, so the model learns to stop), IGNORE_INDEX (-100, what
torch's cross-entropy and transformers' causal-LM loss skip) everywhere else: system and user
turns and the template's scaffolding (`<|im_start|>assistant\\n`, the newline between turns, a
default system prompt the template adds). transformers shifts labels inside the model, so
labels line up with input_ids and no shift happens here.

Which tokens are the assistant's comes from the chat template (components/sft/template.py):
its `{% generation %}` blocks through transformers' apply_chat_template, or, for a template
without them, prefix renderings (template.py's docstring has both).

Too long: a conversation over `max_length` tokens is refused (ConversationError "too_long"),
never truncated. Cutting it would drop the end-of-turn token of the last reply (teaching the model
not to stop) or every assistant token; the caller quarantines it with its reason and count, as
the cleaning step's length limit does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components.sft.template import ROLES, ChatTemplate, chat_template_for

IGNORE_INDEX = -100


class ConversationError(ValueError):
    """A conversation that cannot be trained on. `reason` is a short quarantine key:
    unknown_role, content_not_text, control_token_in_content, too_long, no_assistant_tokens,
    assistant_turn_without_end_of_turn, assistant_turn_first, template_not_prefix_stable."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TokenisedConversation:
    """input_ids and labels, both of length n (the rendered conversation's tokens)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def labelled(self) -> list[int]:
        """Positions whose token the loss reads."""
        return [i for i, label in enumerate(self.labels) if label != IGNORE_INDEX]


def tokenise_conversation(
    tokenizer: Any,
    messages: list[dict[str, str]],
    *,
    max_length: int,
    template: ChatTemplate | None = None,
    conversation_id: str = "conversation",
) -> TokenisedConversation:
    """Render `messages` ([{"role", "content"}, ...], the canonical form) with the chat template and
    label the assistant's tokens, end-of-turn included.

    template: default chat_template_for(tokenizer). conversation_id names the record in errors.
    Raises ConversationError (with .reason) for: a role other than system/user/assistant
    (unknown_role) or content that is not a string (content_not_text); content holding one of the
    tokenizer's special tokens, which would forge turn boundaries (control_token_in_content); more
    than max_length tokens (too_long); no assistant token (no_assistant_tokens); an assistant span
    without the end-of-turn token; and, for prefix masking, a first turn by the assistant or a
    template whose shorter renderings are not token prefixes of longer ones.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be positive, got {max_length}")
    template = template or chat_template_for(tokenizer)
    _check_messages(tokenizer, messages, conversation_id)
    if template.mask_method == "generation":
        input_ids, spans = _generation_spans(tokenizer, messages, template)
    else:
        input_ids, spans = _prefix_spans(tokenizer, messages, template, conversation_id)
    if len(input_ids) > max_length:
        raise ConversationError(
            "too_long", f"{conversation_id}: {len(input_ids)} tokens with its template, over max_length={max_length}"
        )
    end_id = tokenizer.convert_tokens_to_ids(template.end_of_turn)
    labels = [IGNORE_INDEX] * len(input_ids)
    for start, end in spans:
        # keep the span up to and including its last end-of-turn token: what follows it is scaffolding
        ends = [i for i in range(start, end) if input_ids[i] == end_id]
        if not ends:
            raise ConversationError(
                "assistant_turn_without_end_of_turn",
                f"{conversation_id}: an assistant turn (tokens {start}..{end - 1}) has no {template.end_of_turn}; "
                "the template's assistant text must close with the end-of-turn token",
            )
        for i in range(start, ends[-1] + 1):
            labels[i] = input_ids[i]
    if all(label == IGNORE_INDEX for label in labels):
        raise ConversationError("no_assistant_tokens", f"{conversation_id}: no assistant token to learn from")
    return TokenisedConversation(input_ids=input_ids, labels=labels)


def _check_messages(tokenizer: Any, messages: list[dict[str, str]], conversation_id: str) -> None:
    specials = [token for token in tokenizer.all_special_tokens if token]
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ConversationError(
                "unknown_role", f"{conversation_id}: message {index} has role {role!r}; known: {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise ConversationError(
                "content_not_text", f"{conversation_id}: message {index} ({role}) has content of type "
                f"{type(content).__name__}, not text"
            )
        found = [token for token in specials if token in content]
        if found:
            raise ConversationError(
                "control_token_in_content",
                f"{conversation_id}: message {index} ({role}) contains the special token(s) "
                f"{', '.join(found)}, which the tokenizer encodes as template markers",
            )


def _render_ids(tokenizer: Any, messages: list[dict[str, str]], template: str, generation_prompt: bool) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True
        )["input_ids"]
    )


def _generation_spans(
    tokenizer: Any, messages: list[dict[str, str]], template: ChatTemplate
) -> tuple[list[int], list[tuple[int, int]]]:
    """input_ids and [start, end) of each run of tokens inside the template's generation blocks."""
    out = tokenizer.apply_chat_template(
        messages, chat_template=template.template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    input_ids = list(out["input_ids"])
    mask = list(out["assistant_masks"])
    spans: list[tuple[int, int]] = []
    start = None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append((start, i))
            start = None
    return input_ids, spans


def _prefix_spans(
    tokenizer: Any, messages: list[dict[str, str]], template: ChatTemplate, conversation_id: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """input_ids and, per assistant turn i, [tokens of messages[:i] + generation prompt, tokens of
    messages[:i+1]) — for templates without generation blocks."""
    input_ids = _render_ids(tokenizer, messages, template.template, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if index == 0:
            raise ConversationError(
                "assistant_turn_first",
                f"{conversation_id}: the first turn is the assistant's; prefix masking needs a turn before it",
            )
        before = _render_ids(tokenizer, messages[:index], template.template, True)
        through = _render_ids(tokenizer, messages[: index + 1], template.template, False)
        if input_ids[: len(before)] != before or input_ids[: len(through)] != through:
            raise ConversationError(
                "template_not_prefix_stable",
                f"{conversation_id}: the chat template renders turn {index} differently inside the whole "
                "conversation than at its end, so the assistant's tokens cannot be told by prefixes; "
                "give a template with {% generation %} blocks",
            )
        spans.append((len(before), len(through)))
    return input_ids, spans
