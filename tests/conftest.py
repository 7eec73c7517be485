import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.s3"]  # a real SeaweedFS S3 server for tests that ask for it

REPO = Path(__file__).resolve().parents[1]
DEMO_CORPUS = REPO / "data" / "demo-corpus"

# Tests never reach a model hub or phone home, and ranks must not fight over 2 cores.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".cache" / "torch_extensions"))


@pytest.fixture
def demo_corpus() -> Path:
    if not (DEMO_CORPUS / ".built").exists():
        pytest.fail(f"{DEMO_CORPUS} is missing: run `make corpus` (make test builds it first)")
    return DEMO_CORPUS


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _no_injected_run(monkeypatch):
    """A stray MLFLOW_RUN_ID from the environment would redirect every step's logging."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
