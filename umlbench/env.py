"""Facts about the environment a run executed in: packages, code identity, hardware."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

__all__ = ["package_versions", "code_identity", "hardware", "cpu_model"]

_PACKAGES = ("umlbench", "torch", "torchvision", "timm", "numpy", "faiss-cpu", "faiss-gpu-cu12",
             "pytorch-metric-learning", "pandas", "scikit-learn")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


_NOT_CODE = ("tests", "benchmarks")  # package-like folders whose files never change a result


def _git(where: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(where), *args], capture_output=True, timeout=20,
                          check=True)


def code_identity(package: Path | None = None) -> dict:
    """``identity.code`` of a record: umlbench version, git commit, dirty flag, diff hash.

    The commit is that of the git checkout the imported ``umlbench`` package lives in (an
    editable install or ``PYTHONPATH``); a regular ``pip install`` has none, and then the
    version is the identity. The tree is dirty when a tracked file differs from the commit or
    an untracked file sits in one of the Python package folders (code that runs but is not
    committed); ``diff_sha256`` hashes ``git diff HEAD`` plus those untracked files, so two
    records from the same dirty tree share it. ``package``: the package folder to look from
    (default: umlbench's own).
    """
    import umlbench

    out = {"umlbench_version": umlbench.__version__, "git_commit": None, "dirty": None,
           "diff_sha256": None}
    package = package or Path(umlbench.__file__).resolve().parent
    try:
        top = Path(_git(package, "rev-parse", "--show-toplevel").stdout.decode().strip())
        # The package must be tracked there: a venv inside some other repository is not it.
        _git(top, "ls-files", "--error-unmatch", str(package / "__init__.py"))
        sha = _git(top, "rev-parse", "HEAD").stdout.decode().strip()
        diff = _git(top, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff").stdout
        folders = [p.name for p in top.iterdir() if (p / "__init__.py").is_file()
                   and p.name not in _NOT_CODE]
        untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z", "--",
                         *folders).stdout.decode().split("\0") if folders else []
    except (OSError, subprocess.SubprocessError, UnicodeDecodeError):
        return out
    h = hashlib.sha256(diff)
    extra = sorted(u for u in untracked if u)
    for rel in extra:
        h.update(b"\0untracked\0" + rel.encode() + b"\0")
        try:
            h.update((top / rel).read_bytes())
        except OSError:
            continue
    dirty = bool(diff) or bool(extra)
    out.update(git_commit=sha, dirty=dirty, diff_sha256=h.hexdigest() if dirty else None)
    return out


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), e.g. "AMD EPYC" or "Intel(R) Xeon(R)
    Platinum 8481C": float32 kernels (MKL, oneDNN) pick their code path from it, so two
    machines give bit-identical float32 results only when it is the same. Falls back to
    :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str = "cpu", world_size: int = 1) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "world_size": world_size,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
