"""Virtual environments of the competitors, created on first use under bench/.envs/.

torch is installed first and pinned to 2.13.0: that is the CPU build lying on this machine's disk;
any looser pin would download gigabytes of CUDA wheels. The repository is installed editable so
the competitors load the checkpoint and build graphs with exactly hydrodiag's code, under the
repository's constraints.txt, so the packages they share with hydrodiag (FastAPI, uvicorn, pydantic,
numpy) are the same versions in every server of a run.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENVS_DIR = REPO / "bench" / ".envs"
TORCH_PIN = "torch==2.13.0"
CONSTRAINTS = REPO / "constraints.txt"
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class EnvSpec:
    name: str
    packages: tuple[str, ...]

    @property
    def path(self) -> Path:
        return ENVS_DIR / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def fingerprint(self) -> str:
        text = json.dumps([TORCH_PIN, list(self.packages), str(REPO), CONSTRAINTS.read_text(encoding="utf-8")])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


PLAIN_FASTAPI = EnvSpec("plain_fastapi", ())  # fastapi + uvicorn[standard] come with the repository's deps
LITSERVE = EnvSpec("litserve", ("litserve==0.2.19",))


def _pip(python: Path, *args: str, log: Path) -> None:
    command = [str(python), "-m", "pip", "install", "-q", *args]
    with log.open("a") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        subprocess.run(command, check=True, stdout=handle, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S)


def ensure_env(spec: EnvSpec, log=print) -> Path:  # type: ignore[no-untyped-def]
    """The env's python, creating or refreshing the env when its package list changed."""
    marker = spec.path / ".bench-installed"
    if spec.python.exists() and marker.exists() and marker.read_text().strip() == spec.fingerprint():
        return spec.python
    started = time.monotonic()
    log(f"creating {spec.path} (first run only; a few minutes)")
    ENVS_DIR.mkdir(parents=True, exist_ok=True)
    pip_log = ENVS_DIR / f"{spec.name}.install.log"
    if not spec.python.exists():
        subprocess.run(["python3", "-m", "venv", str(spec.path)], check=True, timeout=120)
    _pip(spec.python, TORCH_PIN, log=pip_log)
    _pip(spec.python, "-c", str(CONSTRAINTS), *spec.packages, "-e", str(REPO), TORCH_PIN, log=pip_log)
    marker.write_text(spec.fingerprint())
    log(f"{spec.name} env ready in {time.monotonic() - started:.0f}s (pip log: {pip_log})")
    return spec.python


if __name__ == "__main__":
    for spec in (PLAIN_FASTAPI, LITSERVE):
        ensure_env(spec)
