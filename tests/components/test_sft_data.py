"""SFT data: formats to the canonical conversation, quarantine reasons, cleaning, dedup and the held-out split.

Real conversations: the chatterbot-corpus dialogues the demo corpus is built from (the pinned wheel
`make corpus` fetches, read as pipelines/demo_corpus.py reads it), each YAML conversation's turns
taken as user, assistant, user, ... (a last unanswered turn left out). Malformed records are
hand-made, one per quarantine reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from pydantic import ValidationError

from components import shards
from components.manifest import Manifest
from components.sft.clean import clean_conversations
from components.sft.config import SftDataConfig
from components.sft.formats import QUARANTINE_REASONS, Conversation, convert, read_conversations
from pipelines import demo_corpus

SOURCES = Path(__file__).resolve().parents[2] / ".cache" / "sources"

# the first conversation of chatterbot-corpus english/conversations.yml, its fifth turn left out
GOOD_MORNING = ["Good morning, how are you?", "I am doing well, how about you?", "I'm also good.", "That's good to hear."]


@pytest.fixture(scope="module")
def dialogues():
    """dialogues(language folder, file stem, n): the first n conversations of that YAML file with at
    least two turns, each cut to an even number of turns."""
    wheel = zipfile.ZipFile(demo_corpus.fetch(demo_corpus.CHATTERBOT, SOURCES))

    def read(lang: str, stem: str, n: int) -> list[list[str]]:
        data = yaml.safe_load(wheel.read(f"chatterbot_corpus/data/{lang}/{stem}.yml").decode("utf-8"))
        out = []
        for conversation in data["conversations"]:
            turns = [t.strip() for t in conversation if isinstance(t, str) and t.strip()]
            if len(turns) >= 2:
                out.append(turns[: len(turns) // 2 * 2])
            if len(out) == n:
                return out
        raise AssertionError(f"{lang}/{stem}.yml has fewer than {n} conversations")

    return read


def openai(turns: list[str]) -> list[dict]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]


def sharegpt(turns: list[str]) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def read_rows(path: Path) -> list[dict]:
    return list(shards.read_json_lines(str(path)))


# ---- formats ------------------------------------------------------------------------------------


def test_each_format_converts_to_the_canonical_form_exactly(dialogues, tmp_path):
    assert dialogues("english", "conversations", 1) == [GOOD_MORNING]
    user1, reply1, user2, reply2 = GOOD_MORNING
    system = "You are a friendly assistant."
    canonical = [{"role": "system", "content": system}, *openai(GOOD_MORNING)]

    record = {"id": "o1", "messages": [{"role": "developer", "content": system}, *openai(GOOD_MORNING)], "topic": "greeting"}
    record["messages"][1] = {"role": "user", "content": [{"type": "text", "text": "Good morning, "},
                                                         {"type": "text", "text": "how are you?"}], "name": "ana"}  # fmt: skip
    assert convert(record, "f:1").to_dict() == {
        "id": "o1", "messages": canonical,
        "meta": {"topic": "greeting", "source_format": "openai", "turn_extras": {"1": {"name": "ana"}}},
    }  # fmt: skip

    record = {"conversations": [{"from": "system", "value": system}, *sharegpt(GOOD_MORNING)]}
    # no id: one from the content, the same wherever the file lies
    content_id = "sha256-" + hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]
    assert convert(record, "f:2").to_dict() == {"id": content_id, "messages": canonical, "meta": {"source_format": "sharegpt"}}

    record = {"id": 7, "system": system, "instruction": user1, "input": reply1, "output": user2}
    assert convert(record, "f:3").to_dict() == {
        "id": "7",
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": f"{user1}\n\n{reply1}"},
                     {"role": "assistant", "content": user2}],
        "meta": {"source_format": "alpaca"},
    }  # fmt: skip
    assert convert({"instruction": user1, "input": "", "output": reply1}, "f:4").messages == openai([user1, reply1])

    # Parquet (messages as list<struct>, a field only one turn has: null in the others) and gzipped
    # JSONL read to the same conversations
    rows = [{"id": "p1", "messages": openai(GOOD_MORNING)}, {"id": "p2", "messages": openai(GOOD_MORNING[:2])}]
    rows[0]["messages"][0]["name"] = "ana"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    write_jsonl(tmp_path / "chat.jsonl.gz", rows)
    expected = [Conversation("p1", openai(GOOD_MORNING), {"source_format": "openai", "turn_extras": {"0": {"name": "ana"}}}),
                Conversation("p2", openai(GOOD_MORNING[:2]), {"source_format": "openai"})]  # fmt: skip
    assert list(read_conversations(str(tmp_path / "chat.parquet"))) == expected
    assert list(read_conversations(str(tmp_path / "chat.jsonl.gz"))) == expected


def malformed(turns: list[str]) -> list[tuple[dict, str, str]]:
    """(record, reason, detail) for every quarantine reason, made from one real conversation."""
    u, a = turns[0], turns[1]
    return [
        ({"id": "b1", "text": u}, "unknown_format",
         "no 'messages' (OpenAI), 'conversations' (ShareGPT) or 'instruction' (Alpaca) key; keys: id, text"),
        ({"id": "b2", "messages": u}, "not_a_list", "messages is a str, expected a list of turns"),
        ({"id": "b3", "conversations": {"from": "human", "value": u}}, "not_a_list",
         "conversations is a dict, expected a list of turns"),
        ({"id": "b4", "messages": [{"role": "user", "content": u}, {"role": "tool", "content": a}]}, "unknown_role",
         "messages[1].role is 'tool' (tool/function turns are not read); expected one of ['assistant', 'developer', "
         "'system', 'user']"),
        ({"id": "b5", "conversations": [{"from": "human", "value": u}, {"from": "robot", "value": a}]}, "unknown_role",
         "conversations[1].from is 'robot'; expected one of ['assistant', 'bard', 'bing', 'chatgpt', 'gpt', 'human', "
         "'model', 'system', 'user']"),
        ({"id": "b6", "messages": [{"role": "user", "content": u}]}, "no_assistant_turn", "1 turn(s), none by the assistant"),
        ({"id": "b7", "messages": []}, "no_assistant_turn", "messages is an empty list"),
        ({"id": "b8", "instruction": u}, "no_assistant_turn",
         "no 'output' key: an Alpaca record needs the reply to learn from"),
        ({"id": "b9", "messages": openai([a, u])[::-1]}, "turns_out_of_order",
         "messages[0] is an assistant turn where a user turn belongs (turns alternate user, assistant, starting with user)"),
        ({"id": "b10", "messages": [*openai([u, a]), {"role": "system", "content": u}, {"role": "assistant", "content": a}]},
         "turns_out_of_order", "messages[2] is a system turn not first: a system turn may only open the conversation"),
        ({"id": "b11", "messages": [*openai([u, a]), {"role": "user", "content": u}]}, "turns_out_of_order",
         "messages[2], the last turn, is a user turn: a conversation ends with the assistant's reply"),
        ({"id": "b12", "conversations": [{"from": "human", "value": u}, {"from": "gpt", "value": "  \n"}]},
         "empty_content", "conversations[1].value is empty (only whitespace)"),
        ({"id": "b13", "instruction": u, "output": ""}, "empty_content", "output is empty"),
        ({"id": "b14", "messages": [{"role": "user", "content": u}, {"role": "assistant", "content": None,
                                                                     "tool_calls": []}]},
         "empty_content", "messages[1].content is empty"),
        ({"id": "b15", "messages": [u, a]}, "malformed_turn",
         "messages[0] is a str, expected an object with 'role' and 'content'"),
        ({"id": "b16", "messages": [{"role": "user", "content": u}, {"role": "assistant"}]}, "malformed_turn",
         "messages[1] has no 'content' key (keys: role)"),
        ({"id": "b17", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]},
                                    {"role": "assistant", "content": a}]},
         "malformed_turn", "messages[0].content[0] is a 'image_url' part, not text: only text conversations are read; "
                           "drop other parts before"),
    ]  # fmt: skip


def test_every_quarantine_reason_is_counted_with_its_detail(dialogues, tmp_path):
    cases = malformed(GOOD_MORNING)
    assert {reason for _, reason, _ in cases} == set(QUARANTINE_REASONS)
    good = [{"id": f"en-{i}", "messages": openai(t)} for i, t in enumerate(dialogues("english", "conversations", 4))]
    write_jsonl(tmp_path / "in" / "a.jsonl", [record for record, _, _ in cases] + good)
    with open(tmp_path / "in" / "a.jsonl", "ab") as handle:
        handle.write(b'{"id": "b18", "messages": [\n')  # a record cut short: the reader's own reason
    result = clean_conversations(str(tmp_path / "in"), str(tmp_path / "out"), SftDataConfig(langid=None, near_dedup=None))

    rows = read_rows(tmp_path / "out" / "quarantine" / "part-00000.jsonl")
    source = str(tmp_path / "in" / "a.jsonl")
    assert [(r["source"], r["reason"], r.get("detail")) for r in rows[:-1]] == [
        (f"{source}:{line}", reason, detail) for line, (_, reason, detail) in enumerate(cases, start=1)
    ]
    assert (rows[-1]["source"], rows[-1]["reason"]) == (f"{source}:{len(cases) + len(good) + 1}", "invalid_json")
    assert json.loads(rows[1]["raw"]) == cases[1][0]
    assert result.stats.quarantined == {
        "empty_content": 3, "invalid_json": 1, "malformed_turn": 3, "no_assistant_turn": 3, "not_a_list": 2,
        "turns_out_of_order": 3, "unknown_format": 1, "unknown_role": 2,
    }  # fmt: skip
    assert (result.stats.records_in, result.stats.kept, result.stats.dropped) == (22, 4, {})


# ---- cleaning -----------------------------------------------------------------------------------


@pytest.fixture
def chat_dir(dialogues, tmp_path) -> Path:
    """Real conversations in three files, one per format, with what the cleaner must act on."""
    english = dialogues("english", "conversations", 8)
    greetings = dialogues("english", "greetings", 10)  # "Hi, How is it going?" six times, "Hello" twice
    rows = [{"id": f"en-conv-{i}", "messages": openai(t)} for i, t in enumerate(english)]
    rows[0]["messages"].insert(0, {"role": "system", "content": "You are a friendly assistant."})
    rows += [{"id": f"en-greet-{i}", "messages": openai(t)} for i, t in enumerate(greetings)]
    # PII in a user turn and in an assistant turn of a real exchange
    book, answer = english[4][:2]  # "What is your favorite book?", "I can't read."
    rows.append({"id": "pii", "messages": openai([f"Mail me at jo.smith@example.org: {book}",
                                                  f"{answer} Call +44 20 7946 0958 instead."])})  # fmt: skip
    # the same prompt, British spelling: a near-duplicate of en-conv-4's (the first: kept)
    rows.append({"id": "near", "messages": openai([book.replace("favorite", "favourite"), "Blue"])})
    rows.append({"id": "invisible", "messages": openai([book, "\u200b"])})  # nothing left after normalising
    write_jsonl(tmp_path / "chat" / "a-openai.jsonl", rows)

    german = dialogues("german", "conversations", 6)
    german[0][3] = german[0][3].encode("utf-8").decode("cp1252")  # "Das ist schÃ¶n zu hÃ¶ren." (mojibake)
    rows = [{"id": f"{lang}-{i}", "conversations": sharegpt(t)}
            for lang, convs in (("de", german), ("zh", dialogues("chinese", "conversations", 6)),
                                ("ja", dialogues("japanese", "conversations", 6)))
            for i, t in enumerate(convs)]  # fmt: skip
    write_jsonl(tmp_path / "chat" / "b-sharegpt.jsonl.gz", rows)

    rows = [{"id": f"{lang}-{i}", "instruction": t[0], "input": "", "output": t[1]}
            for lang in ("spanish", "ukrainian", "korean") for i, t in enumerate(dialogues(lang, "conversations", 6))]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat" / "c-alpaca.parquet")
    write_jsonl(tmp_path / "chat" / "d-bad.jsonl", [record for record, _, _ in malformed(GOOD_MORNING)[:3]])
    return tmp_path / "chat"


CONFIG = {"max_turn_chars": 140, "max_conversation_chars": 280, "eval_fraction": 0.2}


def test_clean_conserves_counts_masks_pii_and_drops_duplicate_prompts(chat_dir, dialogues, tmp_path):
    out = tmp_path / "out"
    result = clean_conversations(str(chat_dir), str(out), SftDataConfig(**CONFIG))
    stats = result.stats
    stats.check()
    assert (stats.records_in, stats.kept) == (60, 46)
    assert stats.dropped == {"conversation_too_long": 1, "duplicate": 7, "empty_turn": 1, "near_duplicate": 1,
                             "turn_too_long": 1}  # fmt: skip
    assert stats.quarantined == {"not_a_list": 2, "unknown_format": 1}
    assert stats.records_in == stats.kept + sum(stats.dropped.values()) + sum(stats.quarantined.values())
    assert stats.stages["length"] == {"in": 57, "out": 54, "turn_too_long": 1, "conversation_too_long": 1, "empty_turn": 1}
    assert stats.stages["exact_dedup"] == {"in": 54, "out": 47, "duplicate": 7}
    assert stats.stages["near_dedup"] == {"in": 47, "out": 46, "near_duplicate": 1}
    # the conversation's language (py3langid on its user and assistant turns; "Hi"/"Hello" reads as Breton)
    assert {k: v for k, v in stats.counters.items() if k.startswith("kept_lang_")} == {
        "kept_lang_br": 1, "kept_lang_de": 6, "kept_lang_en": 9, "kept_lang_es": 5, "kept_lang_ja": 6, "kept_lang_ko": 6,
        "kept_lang_sr": 1, "kept_lang_uk": 6, "kept_lang_zh": 6}  # fmt: skip

    train = [c for s in result.manifest.shards for c in read_rows(Path(s.uri))]
    held_out = read_rows(out / "eval" / "part-00000.jsonl.gz")
    kept = {c["id"]: c for c in train + held_out}
    assert len(kept) == stats.kept == result.manifest.facts["train_conversations"] + len(held_out)
    assert kept["pii"]["messages"] == openai(["Mail me at <EMAIL>: What is your favorite book?",
                                              "I can't read. Call <PHONE> instead."])  # fmt: skip
    assert (stats.counters["pii_email_in_user"], stats.counters["pii_phone_in_assistant"]) == (1, 1)
    assert kept["de-0"]["messages"][3]["content"] == "Das ist schön zu hören." and stats.counters["mojibake_repaired"] == 1
    assert kept["en-conv-0"]["messages"][0] == {"role": "system", "content": "You are a friendly assistant."}
    assert kept["spanish-2"] == {"id": "spanish-2", "messages": openai(dialogues("spanish", "conversations", 3)[2][:2]),
                                 "meta": {"source_format": "alpaca", "lang": "es", "script": "Latn"}}  # fmt: skip
    assert [r["id"] for r in read_rows(out / "dropped" / "near_duplicate.jsonl")] == ["near"]
    assert [r["id"] for r in read_rows(out / "dropped" / "duplicate.jsonl")] == [
        "en-greet-0", "en-greet-3", "en-greet-5", "en-greet-6", "en-greet-7", "en-greet-8", "en-greet-9"]  # fmt: skip
    assert [r["id"] for r in read_rows(out / "dropped" / "empty_turn.jsonl")] == ["invisible"]
    assert [r["id"] for r in read_rows(out / "dropped" / "turn_too_long.jsonl")] == ["en-conv-5"]  # a turn of 141
    assert [r["id"] for r in read_rows(out / "dropped" / "conversation_too_long.jsonl")] == ["en-conv-7"]  # 286
    assert sorted(p.name for p in (out / "quarantine").iterdir()) == ["part-00003.jsonl"]
    # the manifests verify against their files; the train manifest names the eval set's digest
    assert Manifest.load(result.manifest_uri).facts["eval_digest"] == Manifest.load(result.eval_manifest_uri).digest
    assert json.loads((out / "stats.json").read_text()) == stats.model_dump()


def test_split_is_deterministic_frozen_and_by_conversation(chat_dir, tmp_path):
    first = clean_conversations(str(chat_dir), str(tmp_path / "one"), SftDataConfig(**CONFIG))
    # the same conversations with the files in the opposite order (renamed): the same held-out set
    moved = tmp_path / "moved"
    moved.mkdir()
    for path, name in zip(sorted(chat_dir.iterdir()), ["z.jsonl", "y.jsonl.gz", "x.parquet", "w.jsonl"]):
        (moved / name).write_bytes(path.read_bytes())
    second = clean_conversations(str(moved), str(tmp_path / "two"), SftDataConfig(**CONFIG))

    def ids(manifest: Manifest) -> list[str]:
        return [c["id"] for s in manifest.shards for c in read_rows(Path(s.uri))]

    held_out = ids(first.eval_manifest)
    assert held_out == ids(second.eval_manifest) and len(held_out) == 16
    assert first.eval_manifest.shards[0].sha256 == second.eval_manifest.shards[0].sha256
    assert first.manifest.facts["eval_digest"] == second.manifest.facts["eval_digest"] == first.eval_manifest.digest
    assert sorted(ids(first.manifest)) == sorted(ids(second.manifest))
    # by conversation: each one whole on exactly one side
    train = ids(first.manifest)
    assert not set(held_out) & set(train) and len(held_out) + len(train) == first.stats.kept
    other_seed = clean_conversations(str(chat_dir), str(tmp_path / "three"), SftDataConfig(**CONFIG, seed=1))
    assert ids(other_seed.eval_manifest) != held_out


def test_config_refuses_unknown_keys_and_lines_shorter_than_conversations():
    with pytest.raises(ValidationError, match="max_turn_char"):
        SftDataConfig(max_turn_char=10)
    with pytest.raises(ValidationError, match="raise max_line_bytes"):
        SftDataConfig(max_line_bytes=1000, max_conversation_chars=2000)
    assert SftDataConfig(pii=None, near_dedup={"threshold": 0.7}).near_dedup.threshold == 0.7
