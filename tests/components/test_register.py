"""The gate's arithmetic, and the registry round trip against a real (SQLite) MLflow store."""

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from components import mlflow_runs
from components.register import registry
from components.register.config import RegisterConfig
from components.tokenizer.train_bpe import train_bpe


def test_first_model_passes_without_champion():
    d = registry.decide(2.0, None, RegisterConfig())
    assert d.passed and "no champion" in d.reason


def test_better_model_passes_worse_fails():
    assert registry.decide(1.9, 2.0, RegisterConfig()).passed
    worse = registry.decide(2.1, 2.0, RegisterConfig())
    assert not worse.passed and worse.status == "failed"
    tie = registry.decide(2.0, 2.0, RegisterConfig())
    assert not tie.passed, "a tie is no improvement"


def test_relative_margin_and_ceiling():
    cfg = RegisterConfig(min_improvement=0.05)
    assert not registry.decide(1.95, 2.0, cfg).passed  # 2.5 % better, 5 % needed
    assert registry.decide(1.89, 2.0, cfg).passed
    languages = RegisterConfig(max_language_regression=0.02)
    regressed = registry.decide(1.9, 2.0, languages, {"en": 1.5, "zh": 2.6}, {"en": 1.6, "zh": 2.5})
    assert not regressed.passed and "bits_per_byte[zh]" in regressed.reason and "[en]" not in regressed.reason
    assert registry.decide(1.9, 2.0, languages, {"en": 1.5, "zh": 2.54}, {"en": 1.6, "zh": 2.5}).passed  # 1.6 %
    assert "[zh]" in registry.decide(1.9, 2.0, languages, {"zh": 2.54}, {"zh": 2.5}).markdown()
    capped = registry.decide(3.0, None, RegisterConfig(max_bits_per_byte=2.5))
    assert not capped.passed and "ceiling" in capped.reason
    table = capped.markdown()
    assert "| check | champion | challenger | threshold | result |" in table and "FAIL" in table


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    tok = train_bpe(["hello world, how are you?", "人人生而自由，在尊严和权利上一律平等。"] * 20,
                    vocab_size=300, min_frequency=1)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=16, n_positions=64,
                                       tie_word_embeddings=False, bos_token_id=tok.eos_token_id,
                                       eos_token_id=tok.eos_token_id))
    out = tmp_path / "hf"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.slow
def test_register_promote_and_load_champion(tiny_model_dir: Path, sqlite_uri: str, tmp_path: Path):
    import mlflow

    cfg = RegisterConfig(model_name="tiny")
    mlflow_runs.configure(sqlite_uri)
    assert registry.champion_model_dir("tiny", tmp_path / "none") is None
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):
        version, created = registry.log_and_register(str(tiny_model_dir), cfg, {"data_manifest_digest": "abc"})
    assert created
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):  # a retried register step
        again, created = registry.log_and_register(str(tiny_model_dir), cfg, {"data_manifest_digest": "abc", "x": "1"})
    client = mlflow.tracking.MlflowClient(sqlite_uri)
    assert (again, created) == (version, False)
    assert len(client.search_model_versions("name = 'tiny'")) == 1
    assert client.get_model_version("tiny", version).tags["x"] == "1"
    assert str(client.get_model_version_by_alias("tiny", "candidate").version) == version
    assert registry.champion_version("tiny") is None
    registry.promote("tiny", version)
    champ = client.get_model_version_by_alias("tiny", "champion")
    assert str(champ.version) == version and champ.tags["data_manifest_digest"] == "abc"

    found = registry.champion_model_dir("tiny", tmp_path / "champ")
    assert found is not None and found[1] == version
    reloaded = AutoModelForCausalLM.from_pretrained(found[0], use_safetensors=True)
    assert reloaded.config.n_embd == 16
    generated = mlflow.pyfunc.load_model("models:/tiny@champion").predict(["hello"])
    assert isinstance(generated[0], str) and generated[0].startswith("hello")


def test_a_version_registered_twice_by_a_retried_request_is_folded_into_the_first(
    tiny_model_dir: Path, sqlite_uri: str, monkeypatch
):
    import mlflow
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore

    create = SqlAlchemyStore.create_model_version

    def answered_twice(self, *args, **kwargs):  # the POST went through, its answer was lost, it was retried
        create(self, *args, **kwargs)
        return create(self, *args, **kwargs)

    monkeypatch.setattr(SqlAlchemyStore, "create_model_version", answered_twice)
    mlflow_runs.configure(sqlite_uri)
    with mlflow_runs.step_run("register", sqlite_uri, experiment="t"):
        version, created = registry.log_and_register(str(tiny_model_dir), RegisterConfig(model_name="tiny"), {})
    client = mlflow.tracking.MlflowClient(sqlite_uri)
    assert (version, created) == ("1", True)
    assert [str(v.version) for v in client.search_model_versions("name = 'tiny'")] == ["1"]
    assert str(client.get_model_version_by_alias("tiny", "candidate").version) == "1"


def test_a_champion_without_figures_fails_the_gate_never_no_champion_yet():
    d = registry.decide(2.0, None, RegisterConfig(), champion_unscored="results.json holds no score for it")
    assert not d.passed and d.reason == ("failed: the current champion scored on this set "
                                         "(results.json holds no score for it)")  # fmt: skip
    assert "| the current champion scored on this set | — | 2.0000 | — | FAIL |" in d.markdown()


def results_json(path: Path, bits_per_byte: float, champion: dict | None = None, stride: int | None = 7) -> str:
    """What `homegrown evaluate` writes (the keys register reads), evaluated with `stride`."""
    import json

    results = {"model_uri": "m", "metrics": {"bits_per_byte": bits_per_byte, "documents": 5},
               "per_language": {"en": {"bits_per_byte": bits_per_byte}}, "eval_digest": "e" * 64,
               "config": {"stride": stride}, "samples": []}  # fmt: skip
    if champion is not None:
        results["champion"] = champion
    path.write_text(json.dumps(results))
    return str(path)


@pytest.mark.slow
def test_register_by_hand_never_demotes_a_champion_results_json_did_not_score(
    tiny_model_dir: Path, sqlite_uri: str, tmp_path: Path, capsys
):
    """The README's by-hand evaluate (without MLflow) then register: v1 (4.0976 bits/byte) is champion,
    a worse model's results.json holds no champion block. The gate fails naming version 1 and what to
    rerun; champion stays on v1. Scores of v1 from another version, or of a --champion directory,
    are not v1's either. The version's scores are cached under results.json's stride, not the config's."""
    import json

    from mlflow.tracking import MlflowClient

    from pipelines.cli import main

    client = MlflowClient(sqlite_uri)
    client.create_registered_model("tiny")
    v1 = client.create_model_version("tiny", str(tmp_path), tags={"bits_per_byte": "4.097600"})
    client.set_registered_model_alias("tiny", "champion", v1.version)
    args = ["register", "--model", str(tiny_model_dir), "--tracking-uri", sqlite_uri,
            "--set", "registry.model_name=tiny"]  # fmt: skip

    results = results_json(tmp_path / "no-champion.json", 4.109)
    assert main([*args, "--results", results]) == 0
    out = capsys.readouterr().out
    assert (f"**Gate: failed** — failed: the current champion scored on this set ({results} holds no score for the "
            "current champion (version 1); rerun `homegrown evaluate` with --tracking-uri") in out
    assert "registered tiny version 2: gate failed" in out and "no champion yet" not in out
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    v2 = client.get_model_version("tiny", "2")
    assert v2.tags["validation_status"] == "failed" and "version 1" in v2.tags["validation_reason"]
    cached = {k: json.loads(v) for k, v in v2.tags.items() if k.startswith("eval_cache.")}
    assert cached == {registry.eval_cache_key("e" * 64, 7): {"metrics": {"bits_per_byte": 4.109, "documents": 5},
                                                              "per_language": {"en": {"bits_per_byte": 4.109}}}}

    scores = {"metrics": {"bits_per_byte": 4.0976}, "per_language": {"en": {"bits_per_byte": 4.0976}}}
    for block in ({**scores, "model_uri": "models:/tiny@champion (version 7)", "version": "7"},
                  {**scores, "model_uri": "/tmp/other-model", "version": None}):
        results = results_json(tmp_path / "other.json", 4.0, block)  # better than the figures, but not v1's
        assert main([*args, "--results", results]) == 0
        assert f"{block['model_uri']!r}, not the current champion (version 1)" in capsys.readouterr().out
        assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"

    worse = {**scores, "model_uri": "models:/tiny@champion (version 1)", "version": "1"}
    assert main([*args, "--results", results_json(tmp_path / "worse.json", 4.109, worse)]) == 0
    assert "failed: bits_per_byte < champion x (1 - 0.0)" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "1"
    assert main([*args, "--results", results_json(tmp_path / "better.json", 4.0, worse)]) == 0
    assert "bits_per_byte 4.0000 beats champion 4.0976" in capsys.readouterr().out
    assert str(client.get_model_version_by_alias("tiny", "champion").version) == "2"
