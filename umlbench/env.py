"""Facts about the environment a run executed in: packages, git commit, hardware."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

__all__ = ["package_versions", "git_commit", "hardware"]

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


def git_commit() -> str | None:
    """The commit of the umlbench checkout (or of the working directory), with ``-dirty``."""
    for where in (Path(__file__).resolve().parent.parent, Path.cwd()):
        try:
            sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout
            dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
            return sha.strip() + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def hardware(device: str = "cpu", world_size: int = 1) -> dict:
    info = {
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "world_size": world_size,
    }
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info
