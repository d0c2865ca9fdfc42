"""The Dockerfile, compose files and .dockerignore agree with the code they deploy.

Settings ignores unknown variables (`extra="ignore"`), so a renamed setting would leave a deployment
silently on its default: these tests catch that, and the other mismatches a deployer would only see
at `docker compose up`. No Docker engine, no network; the files are parsed here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hydrodiag.api.app import MIN_HISTORY_FLUSH_S
from hydrodiag.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Test value for the one variable the compose files require from the deployer.
PASSWORD = "0123456789abcdef0123456789abcdef"
# Runtime ENV names that belong to Python or the shell, not to hydrodiag.
NOT_SETTINGS = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


# --- Dockerfile ---------------------------------------------------------------------------------

def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions (keyword, arguments) per build stage; continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, args = full.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in instructions:
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in stage if kw == keyword]


def key_values(args: str) -> dict[str, str]:
    pairs = shlex.split(args)
    assert all("=" in pair for pair in pairs), f"use the KEY=VALUE form: {args}"
    return dict(pair.split("=", 1) for pair in pairs)


def runtime_stage() -> list[tuple[str, str]]:
    return dockerfile_stages()[-1]


def runtime_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(runtime_stage(), "ENV"):
        env.update(key_values(args))
    return env


def exec_form(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    (args,) = args_of(stage, keyword)[-1:]
    value = json.loads(args)  # shell form would make /bin/sh PID 1, and it does not pass SIGTERM on
    assert isinstance(value, list) and all(isinstance(part, str) for part in value)
    return value


def healthcheck_command() -> list[str]:
    (args,) = args_of(runtime_stage(), "HEALTHCHECK")
    options, _, command = args.partition(" CMD ")
    assert "--start-period=" in options, "the model loads and the database migrates before the first probe counts"
    return exec_form([("CMD", command)], "CMD")


def copies_from_context() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY that reads the build context (no --from)."""
    copies = []
    for stage in dockerfile_stages():
        for args in args_of(stage, "COPY"):
            parts = shlex.split(args)
            if any(part.startswith("--from") for part in parts):
                continue
            paths = [part for part in parts if not part.startswith("--")]
            copies.append((paths[:-1], paths[-1]))
    return copies


# --- compose ------------------------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error} and $$."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        present = bool(current) if op and op.startswith(":") else current is not None
        if op in (":-", "-"):
            return current if present and current is not None else arg
        if op in (":?", "?"):
            if not present:
                raise AssertionError(f"required variable {name}: {arg}")
            return current or ""
        return current or ""

    return _VARIABLE.sub(substitute, value)


def merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {key: merge(base[key], override[key]) if key in base and key in override
                else override.get(key, base.get(key)) for key in {**base, **override}}
    return override


def load_compose(*names: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in names:
        merged = merge(merged, yaml.safe_load((ROOT / name).read_text(encoding="utf-8")))
    return interpolate(merged, {"POSTGRES_PASSWORD": PASSWORD} if env is None else env)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration}"
    return sum(float(number) * units[unit] for number, unit in parts)


CPU = ("docker-compose.yml",)
GPU = ("docker-compose.yml", "docker-compose.gpu.yml")


def app_service(files: tuple[str, ...] = CPU) -> dict[str, Any]:
    return load_compose(*files)["services"]["hydrodiag"]


def setting_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    return {(prefix + name).upper() for name in Settings.model_fields}


# --- .dockerignore ------------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i:end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored_by_docker(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


# --- tests --------------------------------------------------------------------------------------

def test_image_environment_names_are_settings() -> None:
    unknown = set(runtime_env()) - NOT_SETTINGS - setting_names()
    assert not unknown, f"Dockerfile ENV names no setting of hydrodiag.settings.Settings: {sorted(unknown)}"


@pytest.mark.parametrize("files", [CPU, GPU], ids=["cpu", "gpu"])
def test_compose_environment_names_are_settings(files: tuple[str, ...]) -> None:
    unknown = set(environment(app_service(files))) - setting_names()
    assert not unknown, f"{files[-1]} sets variables hydrodiag never reads: {sorted(unknown)}"


@pytest.mark.parametrize("files", [CPU, GPU], ids=["cpu", "gpu"])
def test_deployed_configuration_passes_validation(files: tuple[str, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    deployed = {**runtime_env(), **environment(app_service(files))}
    for name, value in deployed.items():
        if name not in NOT_SETTINGS:
            monkeypatch.setenv(name, value)
    settings = load_settings(_env_file=None)
    assert settings.device == ("cuda" if files == GPU else "cpu")
    assert settings.database_url is not None and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.resolved_model_dir == Path("/models")


def test_entrypoint_runs_the_serve_command_of_the_console_script() -> None:
    from hydrodiag.cli import app

    entrypoint, command = exec_form(runtime_stage(), "ENTRYPOINT"), exec_form(runtime_stage(), "CMD")
    assert entrypoint == ["hydrodiag"]
    assert PYPROJECT["project"]["scripts"]["hydrodiag"] == "hydrodiag.cli:app"
    commands = {c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands}
    assert command[0] == "serve" and "serve" in commands


def test_torch_is_installed_first_from_the_chosen_index_at_the_pinned_version() -> None:
    builder = dockerfile_stages()[0]
    runs = args_of(builder, "RUN")
    (pin,) = [dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch==")]
    first_torch = next(i for i, run in enumerate(runs) if "install" in run and "torch==" in run)
    assert pin in runs[first_torch].split() and '--index-url "${TORCH_INDEX}"' in runs[first_torch]
    first_other = next(i for i, run in enumerate(runs) if "install" in run and "requirements" in run)
    assert first_torch < first_other, "torch must be in place before the other dependencies are resolved"
    (torch_index,) = [key_values(args)["TORCH_INDEX"] for args in args_of(builder, "ARG") if "TORCH_INDEX" in args]
    assert torch_index == "https://download.pytorch.org/whl/cpu"
    assert app_service()["build"]["args"]["TORCH_INDEX"] == torch_index


def constraint_pins() -> dict[str, str]:
    """Package name (normalised as pip does) -> pinned version, from constraints.txt."""
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt pins exact versions only: {line}"
            pins[normalised(name)] = version.strip()
    return pins


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_dependencies() -> list[str]:
    """Names of pyproject's runtime and dev dependencies, without versions or extras."""
    specs = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["dev"]]
    return [normalised(re.match(r"[A-Za-z0-9_.-]+", spec).group(0)) for spec in specs]  # type: ignore[union-attr]


def test_constraints_pin_every_declared_dependency_and_torch_at_pyprojects_pin() -> None:
    pins = constraint_pins()
    unpinned = [name for name in declared_dependencies() if name not in pins]
    assert not unpinned, f"add them with `make lock`: {unpinned}"
    (torch_pin,) = [dep for dep in PYPROJECT["project"]["dependencies"] if dep.startswith("torch==")]
    assert pins["torch"] == torch_pin.removeprefix("torch==")


def test_make_setup_and_the_image_install_under_the_constraints() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "pip install -q -c constraints.txt -e '.[dev]'" in makefile
    assert any("constraints.txt" in sources for sources, _ in copies_from_context())
    builder_runs = args_of(dockerfile_stages()[0], "RUN")
    (requirements_install,) = [run for run in builder_runs if "-r /tmp/requirements.txt" in run]
    assert "-c constraints.txt" in requirements_install


def test_this_environment_runs_the_constrained_versions() -> None:
    """Tests (and make bench) measure the locked versions: after an upgrade, `make lock` records it."""
    from importlib.metadata import version

    pins = constraint_pins()
    installed = {name: version(name).split("+")[0] for name in declared_dependencies()}
    drifted = {name: (have, pins[name]) for name, have in installed.items() if have != pins[name]}
    assert not drifted, f"installed vs constraints.txt: {drifted}; run `make setup` or `make lock`"


def test_model_path_is_the_shipped_checkpoint_the_image_copies() -> None:
    model_path = runtime_env()["MODEL_PATH"]
    (sources,) = [src for src, dest in copies_from_context() if dest == model_path]
    assert sources == ["models/default.ckpt"]
    checkpoint = ROOT / "models" / "default.ckpt"
    # A safetensors file starts with the length of its JSON header (a Git LFS pointer would not).
    head = checkpoint.read_bytes()[:9]
    (header_length,) = struct.unpack("<Q", head[:8])
    assert 0 < header_length < checkpoint.stat().st_size and head[8:9] == b"{"
    assert environment(app_service())["MODEL_PATH"] == model_path


def test_one_port_everywhere() -> None:
    (exposed,) = args_of(runtime_stage(), "EXPOSE")
    default = Settings.model_fields["api_port"].default
    assert int(exposed) == default
    (mapping,) = app_service()["ports"]
    assert int(str(mapping).split(":")[-1].split("/")[0]) == default
    assert int(environment(app_service()).get("API_PORT", default)) == default
    assert f"'{default}'" in healthcheck_command()[-1]


def test_healthcheck_probes_a_path_that_needs_no_api_key() -> None:
    from hydrodiag.api.security import PUBLIC_PATHS

    probe = healthcheck_command()
    assert probe[0] == "python"
    (path,) = re.findall(r"'(/[a-z/]+)'", probe[-1])
    assert path in PUBLIC_PATHS


def test_runs_as_an_unprivileged_user() -> None:
    users = args_of(runtime_stage(), "USER")
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert app_service()["cap_drop"] == ["ALL"]


def test_app_waits_for_a_healthy_postgres_with_the_same_credentials() -> None:
    compose = load_compose(*CPU)
    app, db = compose["services"]["hydrodiag"], compose["services"]["postgres"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    url = urlsplit(environment(app)["DATABASE_URL"])
    db_env = environment(db)
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        db_env["POSTGRES_USER"], db_env["POSTGRES_PASSWORD"], db_env["POSTGRES_DB"])
    assert url.password == PASSWORD
    test = db["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"]
    assert test[test.index("-U") + 1] == db_env["POSTGRES_USER"] and test[test.index("-d") + 1] == db_env["POSTGRES_DB"]
    # postgres:18 and later keep their data one folder up; the volume must follow the image.
    major = re.match(r"postgres:(\d+)", db["image"])
    assert major is not None and 15 <= int(major.group(1)) <= 17
    assert "pgdata:/var/lib/postgresql/data" in db["volumes"] and "pgdata" in compose["volumes"]


def test_compose_refuses_to_start_without_a_database_password() -> None:
    with pytest.raises(AssertionError, match="POSTGRES_PASSWORD"):
        load_compose(*CPU, env={})


def test_stop_grace_period_outlasts_the_whole_graceful_shutdown() -> None:
    app = app_service()
    timeout = float(environment(app).get("SHUTDOWN_TIMEOUT_S", Settings.model_fields["shutdown_timeout_s"].default))
    # Open connections, the engine's queue and the history flush share SHUTDOWN_TIMEOUT_S, and the
    # flush gets at least MIN_HISTORY_FLUSH_S; SIGKILL before the flush ends loses buffered rows.
    assert seconds(app["stop_grace_period"]) >= timeout + MIN_HISTORY_FLUSH_S + 5
    assert app["init"] is True


def test_gpu_override_builds_cuda_torch_and_reserves_a_gpu() -> None:
    cpu, gpu = app_service(CPU), app_service(GPU)
    assert environment(gpu)["DEVICE"] == "cuda"
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", gpu["build"]["args"]["TORCH_INDEX"])
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["image"] != cpu["image"]
    assert gpu["depends_on"] == cpu["depends_on"] and gpu["stop_grace_period"] == cpu["stop_grace_period"]


def test_compose_files_use_no_obsolete_version_key() -> None:
    for name in GPU:
        assert "version" not in yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".env", "bench/.envs/litserve/bin/python", "bench/results/tmp/smoke.json",
    "runs/1/log.txt", "data/hydrodiag.db", "history.db", "docs/evaluation/.folds/0.json", "tests/test_api.py",
    "src/hydrodiag/__pycache__/cli.cpython-311.pyc", "models/experiment.ckpt",
])
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored_by_docker(path)


def test_dockerignore_keeps_everything_the_build_copies() -> None:
    sources = [src for srcs, _ in copies_from_context() for src in srcs]
    assert {"pyproject.toml", "README.md", "src"} <= set(sources)  # README.md: pyproject's `readme`
    package = ROOT / "src" / "hydrodiag"
    data_globs = PYPROJECT["tool"]["setuptools"]["package-data"]["hydrodiag"]
    files = [ROOT / source for source in sources if (ROOT / source).is_file()]
    files += [*package.rglob("*.py"), *(path for pattern in data_globs for path in package.glob(pattern))]
    assert any(f.name == "script.py.mako" for f in files) and any(f.suffix == ".json" for f in files)
    kept_out = [str(f.relative_to(ROOT)) for f in files if ignored_by_docker(str(f.relative_to(ROOT)))]
    assert not kept_out, "the image would lack these files"


@pytest.mark.skipif(not shutil.which("docker-compose") and not shutil.which("docker"), reason="no docker CLI")
def test_docker_compose_accepts_the_files() -> None:
    """Real validation where a Compose v2 CLI exists (`docker compose` or a standalone `docker-compose`)."""
    for program, *sub in (["docker", "compose"], ["docker-compose"]):
        found = shutil.which(program)
        if found and subprocess.run([found, *sub, "version"], capture_output=True, timeout=30).returncode == 0:
            command = [found, *sub]
            break
    else:
        pytest.skip("no docker compose")
    flags = [arg for name in GPU for arg in ("-f", str(ROOT / name))]
    env = {**os.environ, "POSTGRES_PASSWORD": PASSWORD}
    result = subprocess.run([*command, *flags, "config", "-q"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 0, result.stderr
