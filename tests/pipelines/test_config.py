from pathlib import Path

import pytest

from pipelines.config import ConfigError, RunConfig, load_config, parse_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "pipelines" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_names_its_command(path: Path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    header = path.read_text().splitlines()[:4]
    assert any("homegrown " in line or "make " in line for line in header), "header must give the command"


def test_unknown_key_is_named(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("corpus: x\ntrain:\n  zero_stagee: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(cfg) in str(err.value)
    assert "train.zero_stagee: unknown key" in str(err.value)


def test_out_of_range_value_is_named():
    with pytest.raises(ConfigError) as err:
        parse_config({"corpus": "x", "train": {"zero_stage": 5}}, "run.yaml")
    assert "train.zero_stage" in str(err.value) and "less than or equal to 3" in str(err.value)
    assert "got 5" in str(err.value)


def test_batch_sizes_must_divide():
    with pytest.raises(ConfigError, match=r"global_batch_size \(30\) must be a multiple"):
        parse_config({"corpus": "x", "train": {"global_batch_size": 30, "micro_batch_size": 8, "nproc_per_node": 2}})


def test_seq_len_must_fit_context():
    with pytest.raises(ConfigError, match="seq_len"):
        parse_config({"corpus": "x", "tokenizer": {"seq_len": 512}, "model": {"n_positions": 256}})


def test_seq_len_must_fit_the_llama_context_naming_its_key():
    with pytest.raises(ConfigError, match=r"exceeds model.max_position_embeddings \(256\): raise max_position_embeddings"):
        parse_config({"corpus": "x", "tokenizer": {"seq_len": 512},
                      "model": {"architecture": "llama", "max_position_embeddings": 256}})  # fmt: skip
    preset = parse_config({"corpus": "x", "tokenizer": {"seq_len": 2048}, "model": {"preset": "smollm2-135m"}})
    assert preset.model.context_length == 8192 and preset.model.num_key_value_heads == 3


def test_a_key_of_the_other_family_is_named_with_the_right_one(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("corpus: x\nmodel:\n  architecture: qwen2\n  n_layer: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(cfg) in str(err.value) and "model.n_layer is a gpt2 key; qwen2 uses num_hidden_layers" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpus: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_digest_is_stable_and_sensitive():
    a = parse_config({"corpus": "x"})
    assert a.digest == parse_config({"corpus": "x"}).digest
    assert a.digest != parse_config({"corpus": "x", "train": {"max_steps": 7}}).digest
