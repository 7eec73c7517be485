"""Instruction data in the formats people have, converted to one canonical conversation.

    for item in read_conversations("s3://bucket/chat/part-0.jsonl.gz"):
        ...  # Conversation(id, messages=[{"role": "user", "content": ...}, ...], meta) or Quarantined

Canonical form, one JSON object per line (`Conversation.to_dict`):
    {"id": str, "messages": [{"role": "system" | "user" | "assistant", "content": str}, ...], "meta": {...}}
with at most one system turn, first; then user and assistant turns alternating, starting with a
user turn and ending with an assistant turn.

Formats read (`format="auto"` picks one per record by its keys, in this order):
- openai:   {"messages": [{"role", "content"}, ...]}. Roles system, user, assistant; OpenAI's
            "developer" is its newer name for system and is read as system. A content given as a
            list of text parts ([{"type": "text", "text": ...}]) is their concatenation.
- sharegpt: {"conversations": [{"from", "value"}, ...]}; `from` in SHAREGPT_ROLES (human, gpt,
            system and the names other ShareGPT dumps use).
- alpaca:   {"instruction", "input" (optional), "output"}: one user turn, the instruction, and,
            when the input is not empty, a blank line and the input (as the Alpaca prompt puts
            the input after the instruction); one assistant turn, the output.
sharegpt and alpaca records may carry a top-level "system" string: the system turn.
Record keys other than the id and the format's own go to `meta` (a nested "meta" object, as this
project writes, is merged in), with meta["source_format"] naming the format read; turn keys other
than role/content (name, weight, ...) go to meta["turn_extras"] = {turn index: {key: value}}.
Keys whose value is null (a Parquet column a record leaves empty) are left out. A record without
an id gets one from its content: "sha256-" and the first 16 hex digits of the sha256 of its
canonical messages as JSON (keys sorted, before cleaning), so it does not change when the file
moves or is renamed (the held-out split hashes the id).

A malformed record is `Quarantined` (shards.Quarantined: source "<uri>:<line>", reason, raw, detail
naming the turn and what is wrong), with one of QUARANTINE_REASONS; the first fault found decides.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal

from components import shards
from components.shards import Quarantined

Format = Literal["auto", "openai", "sharegpt", "alpaca"]
ROLES = ("system", "user", "assistant")

# ShareGPT `from` values -> canonical role. ShareGPT dumps name the model after the product they
# were scraped from (gpt, chatgpt, bing, bard); tool/function turns are not conversations we train on.
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}

QUARANTINE_REASONS = {
    "unknown_format": "no messages, conversations or instruction key (or the one `format` asks for is missing)",
    "not_a_list": "messages/conversations is not a list",
    "malformed_turn": "a turn is not an object, lacks its role/content key, or its content is not text",
    "unknown_role": "a role (from) outside the format's roles (tool and function turns included)",
    "empty_content": "a turn's content is empty or only whitespace",
    "no_assistant_turn": "no assistant turn (Alpaca: no output) to learn from",
    "turns_out_of_order": "a system turn not first or twice, a conversation not starting with user, two user "
    "or two assistant turns in a row, or a last turn that is not the assistant's",
}


@dataclass
class Conversation:
    id: str
    messages: list[dict[str, str]]  # [{"role": "system" | "user" | "assistant", "content": str}]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": self.messages, "meta": self.meta}

    def prompt(self) -> str:
        """The conversation's prompt: the system turn (if any), a blank line, and the first user turn."""
        system = [m["content"] for m in self.messages[:1] if m["role"] == "system"]
        user = next(m["content"] for m in self.messages if m["role"] == "user")
        return "\n\n".join([*system, user])

    @property
    def text(self) -> str:
        """The user and assistant turns' contents, a blank line between them: what language ID reads
        (the system prompt is often English boilerplate whatever the conversation's language)."""
        return "\n\n".join(m["content"] for m in self.messages if m["role"] != "system")


class _Fault(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def detect_format(record: dict[str, Any]) -> str | None:
    """'openai', 'sharegpt' or 'alpaca' by the record's keys (messages, conversations, instruction); None if none."""
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        return "alpaca"
    return None


_FORMAT_KEYS = {"openai": ("messages",), "sharegpt": ("conversations", "system"),
                "alpaca": ("instruction", "input", "output", "system")}  # fmt: skip


def convert(record: dict[str, Any], where: str, format: Format = "auto", id_field: str = "id") -> Conversation | Quarantined:
    """One raw record (a JSON object) as a canonical Conversation, or Quarantined with a reason of
    QUARANTINE_REASONS and a detail naming the key/turn index (e.g. "messages[2].role 'tool' ...").

    `where` ("<uri>:<line>") is the quarantine source; a record without `id_field` gets `content_id`.
    """
    kind = detect_format(record) if format == "auto" else format
    try:
        if kind is None:
            keys = ", ".join(sorted(map(str, record))[:12]) or "none"
            raise _Fault("unknown_format", f"no 'messages' (OpenAI), 'conversations' (ShareGPT) or 'instruction' "
                                           f"(Alpaca) key; keys: {keys}")  # fmt: skip
        if _FORMAT_KEYS[kind][0] not in record:
            raise _Fault("unknown_format", f"no {_FORMAT_KEYS[kind][0]!r} key, which format={kind!r} reads; "
                                           f"keys: {', '.join(sorted(map(str, record))[:12])}")  # fmt: skip
        if kind == "openai":
            messages, extras = _turns(record["messages"], "messages", "role", "content", OPENAI_ROLES)
        elif kind == "sharegpt":
            messages, extras = _turns(record["conversations"], "conversations", "from", "value", SHAREGPT_ROLES)
            messages = _with_system(record, messages)
        else:
            messages, extras = _alpaca(record), {}
            messages = _with_system(record, messages)
        _check_order(messages, "messages" if kind == "openai" else "conversations" if kind == "sharegpt" else "")
    except _Fault as fault:
        return Quarantined(where, fault.reason, _raw(record), fault.detail)
    meta = {k: v for k, v in record.items() if k != id_field and k not in _FORMAT_KEYS[kind] and v is not None}
    if isinstance(meta.get("meta"), dict):  # our own output format nests metadata
        meta = {**meta.pop("meta"), **meta}
    meta.setdefault("source_format", kind)
    if extras:
        meta["turn_extras"] = extras
    doc_id = record.get(id_field)
    return Conversation(str(doc_id) if doc_id is not None else content_id(messages), messages, meta)


def content_id(messages: list[dict[str, str]]) -> str:
    """The id of a conversation that has none: "sha256-" + 16 hex digits of sha256(messages as JSON, keys sorted)."""
    data = json.dumps(messages, ensure_ascii=False, sort_keys=True).encode("utf-8")
    return "sha256-" + hashlib.sha256(data).hexdigest()[:16]


def _raw(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)[:200]


def _content(value: Any, where: str) -> str:
    """A turn's content as text: a string, or a list of text parts concatenated (OpenAI)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        pieces = []
        for i, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _Fault("malformed_turn", f"{where}[{i}] is a {kind!r} part, not text: only text conversations "
                                               f"are read; drop other parts before")  # fmt: skip
            pieces.append(part["text"])
        text = "".join(pieces)
    elif value is None:
        text = ""
    else:
        raise _Fault("malformed_turn", f"{where} is a {type(value).__name__}, expected text")
    if not text.strip():
        raise _Fault("empty_content", f"{where} is empty" + (" (only whitespace)" if text else ""))
    return text


def _turns(
    turns: Any, key: str, role_key: str, content_key: str, roles: dict[str, str]
) -> tuple[list[dict[str, str]], dict[str, dict[str, Any]]]:
    """([{role, content}], {turn index: other keys}) of an OpenAI/ShareGPT turn list."""
    if not isinstance(turns, list):
        raise _Fault("not_a_list", f"{key} is a {type(turns).__name__}, expected a list of turns")
    messages, extras = [], {}
    for i, turn in enumerate(turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise _Fault("malformed_turn", f"{where} is a {type(turn).__name__}, expected an object with "
                                           f"{role_key!r} and {content_key!r}")  # fmt: skip
        for needed in (role_key, content_key):
            if needed not in turn:
                raise _Fault("malformed_turn", f"{where} has no {needed!r} key (keys: {', '.join(map(str, turn))})")
        role = turn[role_key]
        if not isinstance(role, str) or role not in roles:
            hint = " (tool/function turns are not read)" if role in ("tool", "function", "function_call",
                                                                      "observation", "ipython") else ""  # fmt: skip
            raise _Fault("unknown_role", f"{where}.{role_key} is {role!r}{hint}; expected one of {sorted(roles)}")
        messages.append({"role": roles[role], "content": _content(turn[content_key], f"{where}.{content_key}")})
        other = {k: v for k, v in turn.items() if k not in (role_key, content_key) and v is not None}
        if other:
            extras[str(i)] = other
    return messages, extras


def _alpaca(record: dict[str, Any]) -> list[dict[str, str]]:
    if "output" not in record:
        raise _Fault("no_assistant_turn", "no 'output' key: an Alpaca record needs the reply to learn from")
    instruction = _content(_text_field(record, "instruction"), "instruction")
    extra = record.get("input")
    if extra is not None and not isinstance(extra, str):
        raise _Fault("malformed_turn", f"input is a {type(extra).__name__}, expected text")
    user = f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    output = _content(_text_field(record, "output"), "output")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _text_field(record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise _Fault("malformed_turn", f"{key} is a {type(value).__name__}, expected text")
    return value


def _with_system(record: dict[str, Any], messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """A top-level "system" string as the system turn, before the others."""
    system = record.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return messages
    if not isinstance(system, str):
        raise _Fault("malformed_turn", f"system is a {type(system).__name__}, expected text")
    if messages and messages[0]["role"] == "system":
        raise _Fault("turns_out_of_order", "two system prompts: a top-level 'system' key and a system turn first")
    return [{"role": "system", "content": system}, *messages]


def _check_order(messages: list[dict[str, str]], key: str) -> None:
    """At most one system turn, first; then user, assistant, user, ... ending with assistant."""
    name = (lambda i: f"{key}[{i}]") if key else (lambda i: f"turn {i}")
    if not any(m["role"] == "assistant" for m in messages):
        raise _Fault("no_assistant_turn", f"{len(messages)} turn(s), none by the assistant" if messages
                     else f"{key or 'the conversation'} is an empty list")  # fmt: skip
    start = 1 if messages[0]["role"] == "system" else 0
    for i, message in enumerate(messages[start:], start=start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if message["role"] != expected:
            if message["role"] == "system":
                what = "a second system turn" if start else "a system turn not first"
                raise _Fault("turns_out_of_order", f"{name(i)} is {what}: a system turn may only open the conversation")
            raise _Fault("turns_out_of_order", f"{name(i)} is {'an' if message['role'] == 'assistant' else 'a'} {message['role']} turn where a {expected} turn "
                                               f"belongs (turns alternate user, assistant, starting with user)")  # fmt: skip
    if messages[-1]["role"] != "assistant":
        raise _Fault("turns_out_of_order", f"{name(len(messages) - 1)}, the last turn, is a user turn: a "
                                           f"conversation ends with the assistant's reply")  # fmt: skip


def read_conversations(
    uri: str, format: Format = "auto", id_field: str = "id", max_line_bytes: int | None = None
) -> Iterator[Conversation | Quarantined]:
    """Each record of one shard (local or s3://; JSONL, .gz, .zst or Parquet) as a Conversation, or
    Quarantined: the reader's own reasons (invalid_json, not_utf8, line_too_long, ...; see
    components/shards.py) or QUARANTINE_REASONS."""
    for where, item in shards.read_records(uri, max_line_bytes):
        yield item if isinstance(item, Quarantined) else convert(item, where, format, id_field)


def iter_conversations(uris: list[str]) -> Iterator[Conversation]:
    """Canonical conversations from shards this project wrote; raises ValueError naming the record for
    anything quarantined there (a bug or a hand edit)."""
    for uri in uris:
        for item in read_conversations(uri, "openai"):
            if isinstance(item, Quarantined):
                raise ValueError(f"{item.source}: unreadable conversation in a cleaned shard ({item.reason}: {item.detail})")
            yield item
