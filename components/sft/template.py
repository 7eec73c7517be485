"""The chat template a conversation is rendered with for instruction tuning (SFT).

Which template (`chat_template_for`):
- the base model's own: a tokenizer loaded from a pretrained model keeps the `chat_template` its
  publisher wrote (tokenizer_config.json, or the GGUF metadata `tokenizer.chat_template` that
  components/hf_model.from_gguf carries over). The model was tuned on exactly that layout, so it
  is used as it is;
- otherwise DEFAULT_CHAT_TEMPLATE, for models trained from scratch here: ChatML, the layout of
  Qwen2 and SmolLM2-Instruct,

      <|im_start|>{role}\\n{content}<|im_end|>\\n      per message, then, to ask for a reply,
      <|im_start|>assistant\\n                          (the generation prompt)

  Its markers CHATML_SPECIAL_TOKENS must be single tokens of the tokenizer: train it with
  `tokenizer.special_tokens: ["<|im_start|>", "<|im_end|>"]` (components/tokenizer/config.py);
  `chat_template_for` refuses a tokenizer that would cut them into bytes.

Which tokens are the assistant's (components/sft/masking.py reads it from here):
- "generation": the template wraps what the model must learn to write in
  `{% generation %}...{% endgeneration %}`, and transformers' own
  `apply_chat_template(..., return_assistant_tokens_mask=True, return_dict=True)` reports those
  tokens. DEFAULT_CHAT_TEMPLATE wraps each assistant turn's content AND its end-of-turn
  `<|im_end|>` (the model must learn to stop), not the `<|im_start|>assistant\\n` header nor the
  `\\n` after `<|im_end|>` (scaffolding the template writes, never the model).
- "prefix": a template without generation blocks, like SmolLM2-135M-Instruct's (checked by
  tests/components/test_sft_template.py), is rendered once per assistant turn: the tokens of the
  conversation up to that turn with the generation prompt, and up to the end of that turn; the
  assistant's tokens are those in between, cut after the last end-of-turn token (the `\\n`
  scaffolding after it is dropped, as the generation template does). The end-of-turn token is
  the tokenizer's eos_token unless told (SmolLM2: `<|im_end|>`). This needs a template whose
  renderings of shorter conversations are token prefixes of longer ones; masking.py checks that
  and refuses a template that is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from jinja2.exceptions import TemplateError

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Reserve these at tokenizer-training time (tokenizer.special_tokens) for DEFAULT_CHAT_TEMPLATE.
CHATML_SPECIAL_TOKENS: tuple[str, ...] = (IM_START, IM_END)
ROLES = ("system", "user", "assistant")

# ChatML with generation blocks around what the model writes: an assistant turn's content and its
# <|im_end|>. The Jinja string literals' \n are newlines once rendered. Unknown roles are refused
# (raise_exception is transformers' template helper), so no turn is rendered as something else.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ ': the template takes system, user and assistant') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- generation -%}{{ message['content'] ~ '<|im_end|>' }}{%- endgeneration -%}"
    "{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' ~ message['role'] ~ '\\n' ~ message['content'] ~ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
GENERATION_PROMPT = "<|im_start|>assistant\n"

_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")

MaskMethod = Literal["generation", "prefix"]


class ChatTemplateError(ValueError):
    """No usable chat template for this tokenizer; the message says what to do."""


@dataclass(frozen=True)
class ChatTemplate:
    """A chosen template and how its assistant tokens are found.

    source: "base" (the tokenizer's own) or "default" (DEFAULT_CHAT_TEMPLATE);
    mask_method: "generation" when the template has `{% generation %}` blocks, else "prefix";
    end_of_turn: the token that closes an assistant turn, labelled so the model learns to stop.
    """

    template: str
    source: Literal["base", "default"]
    mask_method: MaskMethod
    end_of_turn: str


def has_generation_blocks(template: str) -> bool:
    """Whether a Jinja chat template marks assistant text with `{% generation %}`."""
    return bool(_GENERATION_TAG.search(template))


def chat_template_for(tokenizer: Any, end_of_turn: str | None = None) -> ChatTemplate:
    """The template to train with: the tokenizer's own `chat_template` when it has one, else
    DEFAULT_CHAT_TEMPLATE (see the module docstring).

    end_of_turn: the base template's end-of-turn token; default the one its rendering of a sample
    exchange closes the reply with (end_of_turn_token), else the tokenizer's eos_token
    (DEFAULT_CHAT_TEMPLATE's is always `<|im_end|>`).
    Raises ChatTemplateError when the default is needed but the tokenizer would not encode
    CHATML_SPECIAL_TOKENS as one id each, when a base tokenizer has several named templates and
    none called "default", or when the end-of-turn token is not a single token.
    """
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):
        if "default" not in own:
            raise ChatTemplateError(
                f"the tokenizer has chat templates {sorted(own)} and none named 'default'; "
                "set tokenizer.chat_template to the one to train with"
            )
        own = own["default"]
    if own:
        # the token the template closes an assistant turn with: ChatML's <|im_end|> also where the
        # tokenizer's eos is another (a model trained here from scratch, tuned again)
        eot = end_of_turn or end_of_turn_token(tokenizer, own, [tokenizer.eos_token_id]) or tokenizer.eos_token
        if not eot or not _is_single_token(tokenizer, eot):
            raise ChatTemplateError(
                f"the base model's end-of-turn token {eot!r} is not one token of its tokenizer; "
                "give the token that closes an assistant turn in its chat template"
            )
        method: MaskMethod = "generation" if has_generation_blocks(own) else "prefix"
        return ChatTemplate(template=own, source="base", mask_method=method, end_of_turn=eot)
    split = [token for token in CHATML_SPECIAL_TOKENS if not _is_single_token(tokenizer, token)]
    if split:
        raise ChatTemplateError(
            f"the tokenizer has no chat template of its own and would cut {', '.join(split)} of the default "
            f"(ChatML) template into pieces: train it with tokenizer.special_tokens: "
            f"{list(CHATML_SPECIAL_TOKENS)}"
        )
    return ChatTemplate(template=DEFAULT_CHAT_TEMPLATE, source="default", mask_method="generation", end_of_turn=IM_END)


def end_of_turn_token(tokenizer, template: str, candidates: list[int]) -> str | None:
    """The token that closes an assistant turn in `template`: in the tokens a one-exchange
    conversation adds after its generation prompt, the first of `candidates` (eos ids), else the
    first special token (a generation config that does not list it). None when the template renders
    neither there (masking then tells why per conversation)."""
    probe = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]

    def render(messages, prompt: bool) -> list[int]:
        return list(tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=prompt,
                                                  tokenize=True, return_dict=True)["input_ids"])  # fmt: skip

    try:
        prompt, whole = render(probe[:1], True), render(probe, False)
    except TemplateError:
        return None
    if whole[: len(prompt)] != prompt:
        return None
    reply = whole[len(prompt) :]
    for wanted in (set(candidates), set(tokenizer.all_special_ids)):
        found = [token for token in reply if token in wanted]
        if found:
            return tokenizer.convert_ids_to_tokens(found[0])
    return None


def _is_single_token(tokenizer: Any, token: str) -> bool:
    """The token is an added (never split) token of the tokenizer with its own id."""
    if token not in tokenizer.get_added_vocab():
        return False
    return tokenizer.encode(token, add_special_tokens=False) == [tokenizer.convert_tokens_to_ids(token)]
