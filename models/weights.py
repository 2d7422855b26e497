"""Weights files: sha256 check and loading into a network, with clear errors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from models.errors import ModelError


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_file(path: Path | str, sha256: str | None, *, what: str = "weights") -> Path:
    """Check that ``path`` exists and (when ``sha256`` is given) has that hash; raise ModelError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{what} file {p} not found; restore it from the repository (git checkout) or "
                         f"train/export it again (preread train / preread export)")
    if sha256:
        actual = sha256_file(p)
        if actual.lower() != sha256.lower():
            raise ModelError(
                f"{what} file {p} has sha256 {actual[:16]}…, the model card expects {sha256[:16]}…: the file is "
                f"corrupt or is not the one the card describes; restore it (git checkout {p.name}) or, for new "
                f"weights, update the card's sha256")
    return p


def load_state_dict(path: Path | str, sha256: str | None) -> dict:
    """Verify then read a torch state dict (tensors only, ``weights_only=True``)."""
    p = verify_file(path, sha256)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means an unreadable file
        raise ModelError(f"weights file {p} is not a readable torch state dict: {err}") from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"weights file {p} does not hold a state dict of tensors")
    return obj


def load_into(net: torch.nn.Module, state: dict, *, source: str) -> torch.nn.Module:
    """Load ``state`` into ``net`` strictly; a mismatch names the missing/unexpected keys."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        msg = " ".join(str(err).split())
        raise ModelError(f"weights {source} do not fit the network of the model card: {msg[:400]}") from err
    return net
