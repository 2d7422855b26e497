"""Network builders: architecture name + parameters (from a model card) → ``torch.nn.Module``.

Only MONAI 3-D segmentation networks; no torchvision. The builder picks no device.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import BasicUNet, SegResNet, UNet

from models.errors import ModelError

ARCHITECTURES = ("unet", "basicunet", "segresnet")


def build_network(architecture: str, params: dict[str, Any] | None = None) -> torch.nn.Module:
    """Build an untrained network. ``params`` are the MONAI constructor arguments from the model card."""
    p = dict(params or {})
    name = architecture.lower()
    try:
        if name == "unet":
            p.setdefault("spatial_dims", 3)
            p["channels"] = tuple(p["channels"])
            p["strides"] = tuple(p["strides"])
            return UNet(**p)
        if name == "basicunet":
            p.setdefault("spatial_dims", 3)
            if "features" in p:
                p["features"] = tuple(p["features"])
            return BasicUNet(**p)
        if name == "segresnet":
            p.setdefault("spatial_dims", 3)
            for key in ("blocks_down", "blocks_up"):
                if key in p:
                    p[key] = tuple(p[key])
            return SegResNet(**p)
    except (TypeError, KeyError, ValueError) as err:
        raise ModelError(f"cannot build {architecture!r} with parameters {params}: {err}") from err
    raise ModelError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}")


def size_divisor(architecture: str, params: dict[str, Any] | None = None) -> int:
    """The factor every spatial input size must be a multiple of for this network."""
    p = params or {}
    name = architecture.lower()
    if name == "unet":
        d = 1
        for s in p.get("strides", (2, 2, 2)):
            d *= int(s)
        return d
    if name == "basicunet":
        return 16
    if name == "segresnet":
        return 2 ** (len(p.get("blocks_down", (1, 2, 2, 4))) - 1)
    return 1
