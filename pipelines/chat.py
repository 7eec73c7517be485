"""`homegrown chat MODEL_URI`: talk to a chat model in the terminal, the reply streamed as it is written.

MODEL_URI: `models:/name@alias` or `models:/name/version` (the MLflow registry, at --tracking-uri),
`runs:/<run id>/model`, an `s3://` prefix or a local directory, holding a Hugging Face model directory
or an MLflow transformers model (model/ + components/tokenizer/). The model must carry a chat
template (the SFT path gives it one); a base model is refused with exit code 2.

Each turn renders the history (the --system prompt, then the user and assistant turns) with the
model's own template and its generation prompt, as `apply_chat_template(..., add_generation_prompt=True)`
does, and runs `generate` in a thread while a TextIteratorStreamer prints the reply (transformers'
documented streaming recipe). Generation stops at the eos ids of the model's generation config
(the template's end-of-turn token among them) or after --max-new-tokens, fewer when the context is
nearly full; the oldest turns are dropped when the history outgrows the context. The history keeps
the reply as the generated tokens decode, without special tokens.

Lines starting with `/` are commands: `/reset` clears the history (the system prompt stays), `/exit`
(or end of input) quits. Runs on the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

HELP = "chat with a model in the terminal: a registered alias, a run, an s3:// prefix or a directory"
USER_PROMPT = "you> "
MODEL_PROMPT = "model> "
GENERATE_THREAD = "homegrown-chat-generate"
REFUSED = 2  # exit status: the model cannot be chatted with (none there, or no chat template)

Message = dict[str, str]


class ChatError(ValueError):
    """A model or message the chat cannot use; the message says what to do."""


@dataclass(frozen=True)
class ChatSettings:
    """system: the system prompt (None: none); max_new_tokens: a reply's limit in tokens;
    temperature: 0 decodes greedily, above 0 samples at that temperature; seed: of the sampling."""

    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0


def chat_model_dir(uri: str, dest: Path) -> Path:
    """A local Hugging Face model directory for uri (see the module docstring), under dest when
    downloaded. Raises ModelDirError when there is none."""
    from components import storage
    from components.hf_model import check_model_dir, fetch_model_dir, flatten_flavor

    if uri.startswith(("models:/", "runs:/")):
        return fetch_model_dir(uri, dest)
    local = storage.download_dir(uri, dest / "download")
    if (local / "MLmodel").is_file():  # an MLflow model's own folder, e.g. a version's S3 location
        local = flatten_flavor(local, dest / "hf", uri)
    check_model_dir(local, uri)
    return local


def load_chat_model(model_dir: Path, label: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a model directory, the model in fp32 and eval mode.
    Raises ChatError when the tokenizer has no chat template (checked before the weights load)."""
    from transformers import AutoTokenizer

    from components.hf_model import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise ChatError(
            f"{label} has no chat template (no chat_template in its tokenizer files): it is a base model, which "
            "continues text rather than answering turns. Instruction-tune it first (the SFT path), or give a "
            "chat model"
        )
    return load_causal_lm(model_dir).eval(), tokenizer


def render(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The token ids of messages with the generation prompt, by the model's own template."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]  # fmt: skip


def fit_context(tokenizer: Any, messages: list[Message], context: int) -> tuple[list[Message], list[int]]:
    """(messages, prompt ids) leaving room for at least one new token in `context` tokens: the oldest
    user/assistant pairs go first; a system prompt and the last message stay. Raises ChatError when
    those alone do not fit."""
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(head):]
    while True:
        ids = render(tokenizer, head + turns)
        if len(ids) < context:
            return head + turns, ids
        if len(turns) <= 1:
            what = "the message and the system prompt take" if head else "the message takes"
            raise ChatError(f"{what} {len(ids)} tokens, and the model's context is {context}: write less")
        turns = turns[2:]


def stream_reply(model: Any, tokenizer: Any, prompt_ids: list[int], max_new_tokens: int, temperature: float,
                 write: Callable[[str], None]) -> str:  # fmt: skip
    """Generate a reply to prompt_ids, passing its text to write piece by piece as it is generated
    (whole words; what has come at the end). Returns the reply's tokens decoded without special tokens."""
    import torch
    from transformers import TextIteratorStreamer

    input_ids = torch.tensor([prompt_ids])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    kwargs = dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                  pad_token_id=pad, streamer=streamer, **sampling)  # fmt: skip
    result: dict[str, Any] = {}

    def generate() -> None:
        try:
            with torch.no_grad():
                result["ids"] = model.generate(**kwargs)
        except BaseException as exc:  # re-raised below; the streamer must still end or the loop waits forever
            result["error"] = exc
            streamer.end()

    thread = threading.Thread(target=generate, name=GENERATE_THREAD, daemon=True)
    thread.start()
    for text in streamer:
        write(text)
    thread.join()
    if "error" in result:
        raise result["error"]
    return tokenizer.decode(result["ids"][0, len(prompt_ids):], skip_special_tokens=True)


def chat_loop(model: Any, tokenizer: Any, settings: ChatSettings, read_line: Callable[[], str | None],
              out: TextIO) -> None:  # fmt: skip
    """Read lines until /exit or end of input (read_line returns None), answering each message."""
    from transformers import set_seed

    from components.hf_model import context_length

    set_seed(settings.seed)
    context = context_length(model)
    system = [{"role": "system", "content": settings.system}] if settings.system else []
    history: list[Message] = list(system)

    def write(text: str) -> None:
        out.write(text)
        out.flush()

    while (line := read_line()) is not None:
        line = line.strip()
        if line == "/exit":
            return
        if line == "/reset":
            history = list(system)
            write("(history cleared)\n")
            continue
        if line.startswith("/"):
            write(f"(unknown command {line.split()[0]}: /reset clears the history, /exit quits)\n")
            continue
        if not line:
            continue
        try:
            kept, prompt_ids = fit_context(tokenizer, history + [{"role": "user", "content": line}], context)
        except ChatError as exc:
            write(f"({exc})\n")
            continue
        if len(kept) < len(history) + 1:
            write(f"(the oldest {len(history) + 1 - len(kept)} messages dropped to fit the {context}-token context)\n")
        write(MODEL_PROMPT)
        reply = stream_reply(model, tokenizer, prompt_ids, min(settings.max_new_tokens, context - len(prompt_ids)),
                             settings.temperature, write)  # fmt: skip
        write("\n")
        history = kept + [{"role": "assistant", "content": reply}]


def line_reader(stdin: TextIO, out: TextIO) -> Callable[[], str | None]:
    """Lines from stdin, None at its end. At a terminal: input() with readline's line editing and
    history; from a pipe: each line echoed after the prompt, so the output reads as a transcript."""
    if stdin.isatty():
        import readline  # noqa: F401  (importing it gives input() line editing and history)

        def read() -> str | None:
            try:
                return input(USER_PROMPT)
            except EOFError:
                out.write("\n")
                return None

        return read

    def read_piped() -> str | None:
        line = stdin.readline()
        if not line:
            return None
        out.write(USER_PROMPT + line.rstrip("\n") + "\n")
        return line.rstrip("\n")

    return read_piped


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", metavar="MODEL_URI",
                        help="models:/name@alias, models:/name/version, runs:/<run id>/model, s3://… or a directory")
    parser.add_argument("--system", metavar="PROMPT", help="system prompt, kept by /reset (default: none)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=ChatSettings.max_new_tokens, metavar="N",
                        help="a reply's limit in tokens, less when the context is nearly full (default: %(default)s)")
    parser.add_argument("--temperature", type=_non_negative_float, default=ChatSettings.temperature, metavar="T",
                        help="0 decodes greedily; above 0 samples at this temperature (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=ChatSettings.seed, metavar="N",
                        help="sampling seed (default: %(default)s)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI for models:/ and runs:/ (default: $MLFLOW_TRACKING_URI, runs/mlflow.db)")


def cmd_chat(args: argparse.Namespace) -> int:
    from transformers.utils import logging as transformers_logging

    from components import mlflow_runs
    from components.hf_model import ModelDirError

    transformers_logging.disable_progress_bar()  # no weight-loading bars in the conversation
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # nor download bars
    settings = ChatSettings(args.system, args.max_new_tokens, args.temperature, args.seed)
    if args.model_uri.startswith(("models:/", "runs:/")):
        mlflow_runs.configure(mlflow_runs.resolve_tracking_uri(args.tracking_uri))
    try:
        with tempfile.TemporaryDirectory(prefix="homegrown-chat-") as tmp:
            model, tokenizer = load_chat_model(chat_model_dir(args.model_uri, Path(tmp)), args.model_uri)
    except (ChatError, ModelDirError) as exc:
        print(f"homegrown chat: {exc}", file=sys.stderr)
        return REFUSED
    out = sys.stdout
    out.write(f"chatting with {args.model_uri}: /reset clears the history, /exit quits\n")
    try:
        chat_loop(model, tokenizer, settings, line_reader(sys.stdin, out), out)
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of tokens")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; 0 means greedy")
    return value
