"""The model card renders what the pipeline measured, whatever is missing."""

import json

from components.register.card import model_card


def test_model_card_sections_and_figures():
    results = {
        "metrics": {"bits_per_byte": 2.5, "perplexity": 12.25, "documents": 30.0},
        "per_language": {"en": {"documents": 25.0, "bits_per_byte": 2.4, "tokens_per_char": 0.3},
                         "zh": {"documents": 5.0, "bits_per_byte": 2.9, "tokens_per_char": 0.9}},
        "eval_digest": "e" * 64,
    }  # fmt: skip
    stats = {"records_in": 100, "kept": 60, "dropped": {"duplicate": 30, "too_short": 8}, "quarantined": {"invalid_json": 2}}
    lineage = {"pipeline_run_name": "demo-1", "data_manifest_digest": "d" * 64, "cleaning_stats": json.dumps(stats)}
    train = {"parameters": 1_300_000, "steps": 300, "tokens": 1_228_800, "final_loss": 4.61, "zero_stage": 2,
             "precision": "fp32", "world_size": 2, "device": "cpu", "tokens_per_s": 15000.0, "mfu": None}  # fmt: skip
    card = model_card("demo", "3", results, "| check |\n\n**Gate: passed**", lineage, train, "models:/base@champion", True)
    assert card.startswith("# demo, version 3")
    assert "continued from `models:/base@champion` with LoRA adapters (merged)" in card
    assert "100 documents in, 60 kept, 38 dropped, 2 quarantined" in card
    assert "| zh | 5 | 2.9000 | 0.900 |" in card
    assert "**Gate: passed**" in card and "Fewer than 20 evaluation documents for: zh" in card
    assert "- pipeline_run_name: `demo-1`" in card and "cleaning_stats" not in card
    assert model_card("demo", "1", {"metrics": {}}, "", {}).startswith("# demo, version 1")


def test_a_chat_models_card_speaks_of_conversations_and_its_tuning():
    results = {
        "kind": "chat",
        "metrics": {"bits_per_byte": 1.5, "perplexity": 4.0, "documents": 12.0},
        "per_language": {"sw": {"documents": 12.0, "bits_per_byte": 1.5, "tokens_per_char": 0.4}},
        "eval_digest": "e" * 64,
    }  # fmt: skip
    stats = {"records_in": 240, "kept": 200, "dropped": {"duplicate": 30}, "quarantined": {"empty_content": 10}}
    lineage = {"pipeline_run_name": "chat-1", "data_manifest_digest": "d" * 64, "cleaning_stats": json.dumps(stats)}
    card = model_card("chat", "2", results, "**Gate: passed**", lineage, None, "data/bases/smollm2-135m", True)
    assert "A chat model instruction-tuned by the homegrown pipeline (run `chat-1`), tuned from " \
           "`data/bases/smollm2-135m` with LoRA adapters (merged)." in card
    assert "240 conversations in, 200 kept, 30 dropped, 10 quarantined" in card
    assert "12 held-out conversations, 1 languages" in card
    assert "the assistant's tokens of each held-out conversation" in card and "rolling windows" not in card
    assert "| language | conversations |" in card and "Fewer than 20 evaluation conversations for: sw" in card
    assert "Instruction-tuned on those conversations only" in card and "No instruction tuning" not in card
