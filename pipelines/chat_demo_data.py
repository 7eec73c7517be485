"""The chat demo's instruction data: the chatterbot-corpus dialogues (28 languages, BSD-3-Clause,
the wheel the demo corpus already pins) as OpenAI-style conversations.

    python -m pipelines.chat_demo_data --cache .cache/sources --output data/chat-demo

A dialogue's lines alternate speakers; the first is the user's, the next the assistant's reply,
and so on. Each becomes one JSONL record {"id", "messages": [{"role", "content"}]} (the SFT data step's language ID
tags each conversation's language) in
<output>/conversations.jsonl. A dialogue with an odd number of lines ends on a line nobody
answers: it is left out of the conversation (a turn without a reply teaches nothing, and the
SFT data step would quarantine the whole dialogue as turns_out_of_order), and counted in
.built as unanswered_lines_left_out. Nothing else is filtered here: a dialogue of one line is
written as it is, and the SFT data step quarantines it with its reason, as it would a user's.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path
from typing import Any, Iterator

import yaml

from pipelines.demo_corpus import CHATTERBOT, fetch, publish

ROLES = ("user", "assistant")


def dialogues(archive: Path) -> Iterator[dict[str, Any]]:
    """One record per chatterbot dialogue, in file order. Raises ValueError naming a YAML file
    that does not parse (the pinned wheel has none: the demo corpus counts them)."""
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(n for n in wheel.namelist() if n.startswith("chatterbot_corpus/data/") and n.endswith(".yml")):
            try:
                data = yaml.safe_load(wheel.read(name).decode("utf-8"))
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ValueError(f"{archive}!{name}: not readable YAML ({exc})") from None
            for index, lines in enumerate((data or {}).get("conversations") or []):
                turns = [str(line).strip() for line in lines if isinstance(line, str | int | float)]
                unanswered = len(turns) > 1 and len(turns) % 2 == 1
                if unanswered:
                    turns = turns[:-1]  # the last line has no reply (see the module docstring)
                yield {
                    "id": f"{name.removeprefix('chatterbot_corpus/data/').removesuffix('.yml')}:{index}",
                    "messages": [{"role": ROLES[i % 2], "content": turn} for i, turn in enumerate(turns)],
                    "_unanswered": int(unanswered),
                }


def build(cache: Path, output: Path) -> int:
    """Write <output>/conversations.jsonl (atomically, with a .built marker); returns the count."""
    records = list(dialogues(fetch(CHATTERBOT, cache)))
    left_out = sum(record.pop("_unanswered") for record in records)

    def write(tmp: Path) -> None:
        with open(tmp / "conversations.jsonl", "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        (tmp / ".built").write_text(json.dumps({"dialogues": len(records), "unanswered_lines_left_out": left_out,
                                                   "source": CHATTERBOT.filename}) + "\n")

    publish(write, output)
    return len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.chat_demo_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/sources"), help="downloaded packages (verified)")
    parser.add_argument("--output", type=Path, default=Path("data/chat-demo"))
    args = parser.parse_args(argv)
    count = build(args.cache, args.output)
    built = json.loads((args.output / ".built").read_text())
    print(f"chat demo data: {count} dialogues -> {args.output / 'conversations.jsonl'} "
          f"({built['unanswered_lines_left_out']} unanswered last lines left out)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
