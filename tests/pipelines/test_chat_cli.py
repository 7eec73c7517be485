"""`homegrown chat` driven through stdin on a tiny chat model taught to answer by its history: each
reply equals greedy `apply_chat_template` + `generate` on the history the command kept (and reset),
and it reaches stdout in pieces while the generation thread still runs. A base model is refused."""

from __future__ import annotations

import functools
import io
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, set_seed

from pipelines.chat import GENERATE_THREAD, MODEL_PROMPT, REFUSED, ChatError, fit_context, render
from pipelines.cli import main

from tests.chat_model import PIRATE, TAUGHT, assistant, greedy_reply, system, taught_chat_model, tiny_chat_model, user

MAX_NEW = 40
TAUGHT_ADA = TAUGHT[0]
QUESTION = "what is my name?"


class Recorder(io.StringIO):
    """stdout that also notes, for each write, whether a reply was still being generated."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, bool]] = []

    def write(self, text: str) -> int:
        generating = any(t.name == GENERATE_THREAD and t.is_alive() for t in threading.enumerate())
        self.writes.append((text, generating))
        return super().write(text)

    def replies(self) -> list[list[tuple[str, bool]]]:
        """The non-empty pieces of each reply: the writes after MODEL_PROMPT up to its closing newline."""
        replies, current = [], None
        for text, generating in self.writes:
            if text == MODEL_PROMPT:
                current = []
            elif current is not None and text == "\n":
                replies.append(current)
                current = None
            elif current is not None and text:
                current.append((text, generating))
        return replies


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    return taught_chat_model(tmp_path_factory.mktemp("chat") / "model")


def chat(monkeypatch, args: list[str], lines: list[str]) -> tuple[int, Recorder]:
    """Run `homegrown chat ARGS` in-process with these lines on stdin; (exit status, its stdout)."""
    out = Recorder()
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    monkeypatch.setattr(sys, "stdout", out)
    return main(["chat", *args]), out


@pytest.fixture
def slow_steps(monkeypatch):
    """Each forward pass takes 10 ms more, so a reply takes long enough that its first words are
    printed while the rest is still being generated, whatever the machine's speed."""
    forward = LlamaForCausalLM.forward

    @functools.wraps(forward)  # generate inspects forward's signature
    def slow(self, *args, **kwargs):
        time.sleep(0.01)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", slow)


def test_chat_keeps_the_history_resets_it_and_streams(chat_dir: Path, monkeypatch, slow_steps):
    lines = ["my name is Ada", QUESTION, "/reset", QUESTION, "/exit", "my name is Bob"]
    status, out = chat(monkeypatch, [str(chat_dir), "--max-new-tokens", str(MAX_NEW)], lines)
    assert status == 0
    first = greedy_reply(chat_dir, [user("my name is Ada")], MAX_NEW)
    second = greedy_reply(chat_dir, [user("my name is Ada"), assistant(first), user(QUESTION)], MAX_NEW)
    after_reset = greedy_reply(chat_dir, [user(QUESTION)], MAX_NEW)
    # the taught replies: the same question answered from the kept history, then without it
    assert (first, second, after_reset) == ("hello Ada", "your name is Ada", "I do not know")
    replies = out.replies()
    assert ["".join(text for text, _ in reply) for reply in replies] == [first, second, after_reset]  # Bob: after /exit
    assert "(history cleared)\n" in out.getvalue()
    for reply in replies:  # several words each: streamed in pieces, some before generation ended
        assert len(reply) > 1 and any(generating for _, generating in reply), reply


def test_the_system_prompt_leads_every_turn_and_survives_reset(chat_dir: Path, monkeypatch):
    status, out = chat(monkeypatch, [str(chat_dir), "--system", PIRATE, "--max-new-tokens", str(MAX_NEW)],
                       [QUESTION, "/reset", QUESTION])  # fmt: skip; ends at end of input, without /exit
    assert status == 0
    expected = greedy_reply(chat_dir, [system(PIRATE), user(QUESTION)], MAX_NEW)
    assert expected == "arr, I do not know"  # not "I do not know": the system prompt was rendered
    assert ["".join(text for text, _ in reply) for reply in out.replies()] == [expected, expected]


def test_a_base_model_without_a_chat_template_is_refused(tmp_path: Path, capsys):
    base = tiny_chat_model(tmp_path / "base", with_template=False)
    assert main(["chat", str(base)]) == REFUSED
    err = capsys.readouterr().err
    assert err == (f"homegrown chat: {base} has no chat template (no chat_template in its tokenizer files): it is a "
                   "base model, which continues text rather than answering turns. Instruction-tune it first (the SFT "
                   "path), or give a chat model\n")  # fmt: skip


def test_sampling_follows_the_temperature_and_the_seed(chat_dir: Path, monkeypatch):
    status, out = chat(monkeypatch, [str(chat_dir), "--temperature", "5", "--seed", "3",
                                     "--max-new-tokens", "12"], ["my name is Cy"])  # fmt: skip
    assert status == 0
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    model = AutoModelForCausalLM.from_pretrained(chat_dir, use_safetensors=True)
    enc = tokenizer.apply_chat_template([user("my name is Cy")], add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)  # fmt: skip
    set_seed(3)
    with torch.no_grad():
        sampled = model.generate(**enc, max_new_tokens=12, do_sample=True, temperature=5.0)
    expected = tokenizer.decode(sampled[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert ["".join(text for text, _ in reply) for reply in out.replies()] == [expected]
    assert expected != greedy_reply(chat_dir, [user("my name is Cy")], 12)


def test_the_oldest_turns_go_when_the_history_outgrows_the_context(chat_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    history = [system(PIRATE), *TAUGHT_ADA, user("my name is Bob")]
    kept = [system(PIRATE), TAUGHT_ADA[2], TAUGHT_ADA[3], user("my name is Bob")]
    context = len(render(tokenizer, kept)) + 1
    assert fit_context(tokenizer, history, context) == (kept, render(tokenizer, kept))
    assert fit_context(tokenizer, history, len(render(tokenizer, history)) + 1)[0] == history
    last = [system(PIRATE), user("my name is Bob")]
    with pytest.raises(ChatError, match=f"the message and the system prompt take {len(render(tokenizer, last))} "
                                        f"tokens, and the model's context is 10: write less"):  # fmt: skip
        fit_context(tokenizer, history, 10)
