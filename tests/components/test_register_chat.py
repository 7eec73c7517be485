"""A chat model registered through the real MLflow registry (SQLite) answers `{"messages": [...]}` from
`models:/<name>@champion` in the chat schema, exactly as `apply_chat_template` + `generate` on the
downloaded files, and `homegrown chat` on the alias answers the same; a base model still registers as
text-generation."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from components import mlflow_runs
from components.hf_model import flatten_flavor
from components.register import registry
from components.register.config import RegisterConfig
from components.sft.template import DEFAULT_CHAT_TEMPLATE, IM_END
from pipelines.cli import main

from tests.chat_model import PIRATE, TAUGHT, greedy_reply, system, taught_chat_model, tiny_chat_model, user


@pytest.mark.slow
def test_a_registered_chat_model_answers_in_the_chat_schema_like_transformers(
    sqlite_uri: str, tmp_path: Path, monkeypatch, capsys
):
    import mlflow
    from mlflow.models import get_model_info

    model_dir = taught_chat_model(tmp_path / "chat")
    mlflow_runs.configure(sqlite_uri)
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):
        version, created = registry.log_and_register(str(model_dir), RegisterConfig(model_name="chat"), {})
    registry.promote("chat", version)
    uri = "models:/chat@champion"
    info = get_model_info(uri)
    assert (info.flavors["transformers"]["task"], info.flavors["transformers"]["inference_task"]) == (
        "text-generation", "llm/v1/chat")  # fmt: skip
    # half the 256-token context, greedy
    assert info.flavors["python_function"]["config"] == {"max_new_tokens": 128, "do_sample": False}

    # the downloaded files: template and end-of-turn eos id survived logging and registering
    downloaded = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "mlflow")))
    files = flatten_flavor(downloaded, tmp_path / "hf", uri)
    tokenizer = AutoTokenizer.from_pretrained(files)
    assert tokenizer.chat_template == DEFAULT_CHAT_TEMPLATE
    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    assert AutoModelForCausalLM.from_pretrained(files).generation_config.eos_token_id == [tokenizer.eos_token_id, im_end]

    served = mlflow.pyfunc.load_model(uri)
    history = TAUGHT[0][:3]
    answer = served.predict({"messages": history})
    assert len(answer) == 1 and answer[0]["object"] == "chat.completion"
    (choice,) = answer[0]["choices"]
    expected = greedy_reply(files, history, 128)
    assert expected == "your name is Ada"  # the taught reply: it depends on the first turn
    assert choice["message"] == {"role": "assistant", "content": expected}
    assert choice["finish_reason"] == "stop"  # <|im_end|> ended it, well before 128 tokens
    prompt_tokens = len(tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])  # fmt: skip
    reply_tokens = len(tokenizer.encode(expected, add_special_tokens=False)) + 1  # with <|im_end|>
    assert answer[0]["usage"] == {"prompt_tokens": prompt_tokens, "completion_tokens": reply_tokens,
                                  "total_tokens": prompt_tokens + reply_tokens}  # fmt: skip

    # the system prompt is rendered by the model's template, and a request's max_tokens is honoured
    pirate = served.predict({"messages": [system(PIRATE), user("what is my name?")]})[0]["choices"][0]
    assert pirate["message"]["content"] == greedy_reply(files, [system(PIRATE), user("what is my name?")], 128)
    assert pirate["message"]["content"] == "arr, I do not know"
    cut = served.predict({"messages": history, "max_tokens": 3})[0]
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 3
    assert cut["choices"][0]["message"]["content"] == greedy_reply(files, history, 3).lstrip()

    # `homegrown chat` on the alias, and on the MLflow model's own folder, answers the same
    for source in ("models:/chat@champion", str(downloaded)):
        monkeypatch.setattr(sys, "stdin", io.StringIO("my name is Ada\nwhat is my name?\n"))
        assert main(["chat", source, "--tracking-uri", sqlite_uri]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "model> your name is Ada", source


@pytest.mark.slow
def test_a_base_model_without_a_template_still_registers_as_text_generation(sqlite_uri: str, tmp_path: Path):
    import mlflow
    from mlflow.models import get_model_info

    model_dir = tiny_chat_model(tmp_path / "base", with_template=False)
    mlflow_runs.configure(sqlite_uri)
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):
        version, _ = registry.log_and_register(str(model_dir), RegisterConfig(model_name="base"), {})
    registry.promote("base", version)
    flavor = get_model_info("models:/base@champion").flavors["transformers"]
    assert flavor["task"] == "text-generation" and "inference_task" not in flavor
    generated = mlflow.pyfunc.load_model("models:/base@champion").predict(["my name is"])
    continuation = greedy_reply_text(model_dir, "my name is", 32)
    assert generated == ["my name is" + continuation]


def greedy_reply_text(model_dir: Path, prompt: str, max_new_tokens: int) -> str:
    """A base model's greedy continuation of a prompt, decoded."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    enc = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
