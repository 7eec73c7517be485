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
