"""`homegrown serve` answering the official `openai` client on a loopback port: transformers' server
pinned to a tiny chat model taught its replies, each answer equal to greedy `generate` on the same
input; streamed text arrives while generation still runs; max_tokens and stop sequences behave as
OpenAI's; unknown model, over-long prompt and bad JSON are 4xx errors after which it keeps serving."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import openai
import pytest
import torch
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from components.serve.app import build_app, cut_at_stop, held_back

from tests.chat_model import greedy_reply, taught_chat_model, tiny_chat_model, user
from tests.loopback import free_port

NAME = "models:/tiny-chat@champion"
QUESTION = [user("what is my name?")]
CONTEXT = 256  # tiny_chat_model's
REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serving(model_dir: Path, name: str) -> Iterator[str]:
    """build_app(model_dir, name) served by uvicorn on a free loopback port; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(build_app(model_dir, name), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return taught_chat_model(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def url(model_dir: Path) -> Iterator[str]:
    with serving(model_dir, NAME) as base:
        yield base


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a raw request, errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def greedy_completion(model_dir: Path, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """(text, new tokens) of greedy generate on the tokenized prompt, as transformers alone gives them."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True), len(new)


def assert_serving(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=30)
    assert reply.choices[0].message.content == "I do not know"


def test_models_and_health(client: openai.OpenAI, url: str):
    assert [(m.id, m.object, m.owned_by) for m in client.models.list()] == [(NAME, "model", "homegrown")]
    assert http("GET", url + "/health/live") == (200, {"status": "alive"})
    assert http("GET", url + "/health/ready") == (200, {"status": "ready", "model": NAME})
    assert http("GET", url + "/health") == (200, {"status": "ok"})
    assert http("POST", url + "/reset", b"{}")[0] == 404  # transformers' model-management routes are not served


def test_chat_completion_is_greedy_generate_on_the_template(client: openai.OpenAI, model_dir: Path):
    messages = [user("my name is Ada"), {"role": "assistant", "content": "hello Ada"}, user("what is my name?")]
    reply = client.chat.completions.create(model=NAME, messages=messages, max_tokens=40)
    assert reply.choices[0].message.content == greedy_reply(model_dir, messages, 40) == "your name is Ada"
    assert (reply.model, reply.choices[0].finish_reason) == (NAME, "stop")


def test_completion_and_max_tokens(client: openai.OpenAI, model_dir: Path):
    for max_tokens, finish in ((3, "length"), (40, "stop")):  # 40: the reply ends at an eos token before
        reply = client.completions.create(model=NAME, prompt="my name is", max_tokens=max_tokens)
        text, new = greedy_completion(model_dir, "my name is", max_tokens)
        choice = reply.choices[0]
        assert (choice.text, reply.usage.completion_tokens, choice.finish_reason) == (text, new, finish)
        assert (new == max_tokens) == (finish == "length") and text


def test_a_temperature_samples_and_a_seed_replays_it(client: openai.OpenAI, model_dir: Path):
    greedy = greedy_reply(model_dir, QUESTION, 24)

    def sampled(seed: int) -> str:
        reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=24, temperature=3.0,
                                               seed=seed)  # fmt: skip
        return reply.choices[0].message.content

    first = [sampled(seed) for seed in range(4)]
    assert first == [sampled(seed) for seed in range(4)]  # the seed replays the sample
    assert any(text != greedy for text in first)  # a temperature above 0 samples
    reply = client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=24, temperature=0.0)
    assert reply.choices[0].message.content == greedy


def test_stop_sequences_end_the_text_before_them(client: openai.OpenAI):
    reply = client.chat.completions.create(model=NAME, messages=QUESTION, stop=[" not", "xyz"])
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == ("I do", "stop")
    chunks = client.chat.completions.create(model=NAME, messages=QUESTION, stop=" kn", stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I do not"
    text = client.completions.create(model=NAME, prompt="my name is", max_tokens=12).choices[0].text
    stop = text[len(text) // 2:]  # the completion's second half: a stop there ends it before
    reply = client.completions.create(model=NAME, prompt="my name is", max_tokens=12, stop=stop)
    assert reply.choices[0].text == text[: text.find(stop)] and 0 < len(reply.choices[0].text) < len(text)


def test_stop_helpers():
    assert cut_at_stop("I do not know", [" kn", " no"]) == ("I do", True)
    assert cut_at_stop("I do", ["x"]) == ("I do", False)
    assert held_back("I do no", [" not"]) == 3 and held_back("I do", [" not"]) == 0


@pytest.fixture
def slow_steps(monkeypatch) -> list[float]:
    """Each forward pass sleeps 50 ms first; returns the times (time.monotonic) the passes started."""
    forward, started = LlamaForCausalLM.forward, []

    @functools.wraps(forward)  # generate inspects forward's signature
    def slow(self, *args, **kwargs):
        started.append(time.monotonic())
        time.sleep(0.05)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", slow)
    return started


def test_streamed_chat_arrives_while_generating(client: openai.OpenAI, model_dir: Path, slow_steps: list[float]):
    pieces = []
    for chunk in client.chat.completions.create(model=NAME, messages=QUESTION, max_tokens=40, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append((chunk.choices[0].delta.content, time.monotonic()))
    last_step = slow_steps[-1]  # before greedy_reply's own (slowed) steps
    assert "".join(text for text, _ in pieces) == greedy_reply(model_dir, QUESTION, 40) == "I do not know"
    assert len(pieces) > 1
    assert pieces[0][1] < last_step  # the first text came before the last token's forward pass began


def test_errors_are_4xx_and_the_server_keeps_serving(client: openai.OpenAI, url: str, model_dir: Path):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4", messages=QUESTION)
    assert unknown.value.body["message"] == f"model 'gpt-4' is not served here; this server serves '{NAME}'"
    assert_serving(client)

    long = [user("my name is Ada " * 100)]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    length = len(tokenizer.apply_chat_template(long, add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"])  # fmt: skip
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=NAME, messages=long)
    assert too_long.value.body["message"] == (f"the prompt is {length} tokens and the model's context is {CONTEXT} "
                                              "tokens, which leaves no room for a reply: shorten the prompt")
    assert_serving(client)

    with pytest.raises(openai.BadRequestError) as too_many:
        client.completions.create(model=NAME, prompt="my name is", max_tokens=CONTEXT)
    prompt = len(tokenizer("my name is")["input_ids"])
    assert too_many.value.body["message"] == (f"the model's context is {CONTEXT} tokens, and {prompt + CONTEXT} were "
                                              f"requested ({prompt} in the prompt, max_tokens {CONTEXT}): shorten the "
                                              "prompt or lower max_tokens")
    assert_serving(client)

    for body in (b'{"model": "x", "messages": [', b"[1, 2]"):
        status, answer = http("POST", url + "/v1/chat/completions", body)
        assert status == 400 and answer["error"]["type"] == "invalid_request_error", answer
        assert answer["error"]["message"].startswith("the request body is not a JSON object")
    assert_serving(client)


def test_a_base_model_serves_completions_but_not_chat(tmp_path: Path):
    base = tiny_chat_model(tmp_path / "base", with_template=False)
    with serving(base, "base") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError, match="base has no chat template"):
            client.chat.completions.create(model="base", messages=QUESTION)
        reply = client.completions.create(model="base", prompt="hello", max_tokens=4)
        assert (reply.choices[0].text, 4) == greedy_completion(base, "hello", 4)


def test_the_serve_command(model_dir: Path, tmp_path: Path):
    """`homegrown serve DIR --model-name …` in its own process, answering until stopped."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    log = open(tmp_path / "stderr", "w+")  # a file, not a pipe nobody drains while the server runs
    proc = subprocess.Popen([sys.executable, "-m", "pipelines", "serve", str(model_dir), "--port", str(port),
                             "--model-name", "tiny"], cwd=REPO, env=env, stderr=log)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "stderr").read_text()
            try:
                if http("GET", f"http://127.0.0.1:{port}/health/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        reply = client.chat.completions.create(model="tiny", messages=QUESTION)
        assert reply.choices[0].message.content == "I do not know"
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
