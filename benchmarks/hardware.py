"""Hardware and library versions, recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import re
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def hardware_info() -> dict:
    import torch

    info = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gb": _mem_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    versions = {}
    for name in ("preread", "torch", "monai", "numpy", "pydicom", "SimpleITK", "onnxruntime-gpu", "ray",
                 "highdicom"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["versions"] = versions
    return info


def hardware_slug(info: dict | None = None) -> str:
    """A folder name for benchmarks/results/<hardware>/, e.g. ``cpu-2c`` or ``nvidia-h100``."""
    info = info or hardware_info()
    if info.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    return f"cpu-{info.get('cpu_count')}c"


def _mem_gb() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None
