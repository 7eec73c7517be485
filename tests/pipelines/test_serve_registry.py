"""`homegrown serve` on the registry's own URIs answers the official `openai` client exactly as serving the
model's directory does: a taught chat model registered (log_and_register, trained_by the train run, then
promote) in a SQLite MLflow, served as `models:/<name>@champion` and as `runs:/<train run>/<name>` (the
logged model is named after the registered model and hangs off the train run) by the command in its own
process, against the directory served in this one."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Iterator

import openai
import pytest

from components import mlflow_runs
from components.register import registry
from components.register.config import RegisterConfig

from tests.chat_model import assistant, taught_chat_model, user
from tests.loopback import free_port
from tests.pipelines.test_serve import REPO, http, serving

NAME = "tiny-chat"
ASKED = [  # (messages, max_tokens): a reply that depends on the history, one without max_tokens, one cut short
    ([user("my name is Ada"), assistant("hello Ada"), user("what is my name?")], 40),
    ([user("what is my name?")], None),
    ([user("my name is Bob"), assistant("hello Bob"), user("what is my name?")], 3),
]


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[Path, str, str]:
    """(the model directory, the tracking URI, the train run's id): version 1 of NAME, champion."""
    root = tmp_path_factory.mktemp("serve-registry")
    model_dir = taught_chat_model(root / "model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow_runs.configure(uri)
    with mlflow_runs.step_run("train", uri, experiment="t") as train:
        pass
    with mlflow_runs.step_run("register", uri, experiment="t"):
        version, created = registry.log_and_register(str(model_dir), RegisterConfig(model_name=NAME), {},
                                                     trained_by=train.info.run_id)  # fmt: skip
    registry.promote(NAME, version)
    assert (version, created) == ("1", True)
    return model_dir, uri, train.info.run_id


def answers(base_url: str, model: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(the served model ids, (content, finish reason) of each ASKED chat completion)."""
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=60)
    ids = [m.id for m in client.models.list()]
    replies = []
    for messages, max_tokens in ASKED:
        extra = {} if max_tokens is None else {"max_tokens": max_tokens}
        choice = client.chat.completions.create(model=model, messages=messages, **extra).choices[0]
        replies.append((choice.message.content, choice.finish_reason))
    return ids, replies


@contextlib.contextmanager
def serve_command(model_uri: str, tracking_uri: str, log: Path) -> Iterator[str]:
    """`homegrown serve MODEL_URI --tracking-uri …` in its own process; yields its base URL once ready."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)  # only --tracking-uri says where the registry is
    with open(log, "w+") as err:  # a file, not a pipe nobody drains while the server runs
        proc = subprocess.Popen([sys.executable, "-m", "pipelines", "serve", model_uri, "--port", str(port),
                                 "--tracking-uri", tracking_uri], cwd=REPO, env=env, stderr=err)  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    if http("GET", f"http://127.0.0.1:{port}/health/ready")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.2)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(20)


@pytest.mark.slow
def test_serving_the_champion_and_the_train_runs_model_answers_as_the_directory(registered, tmp_path: Path):
    model_dir, tracking_uri, train_run = registered
    with serving(model_dir, "dir") as url:
        ids, expected = answers(url, "dir")
    assert ids == ["dir"]
    assert expected == [("your name is Ada", "stop"), ("I do not know", "stop"), (expected[2][0], "length")]
    assert expected[2][0] and expected[2][0] != "your name is Bob"  # 3 tokens: cut before the end

    for model_uri in (f"models:/{NAME}@champion", f"runs:/{train_run}/{registry.logged_model_name(NAME)}"):
        with serve_command(model_uri, tracking_uri, tmp_path / "stderr") as url:
            assert answers(url, model_uri) == ([model_uri], expected), model_uri
