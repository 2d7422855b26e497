"""Preprocessing for the nodule model, as its model card says: HU window → [0, 1], isotropic resampling.

Boxes are half-open voxel ranges ``[start, stop)`` per array axis ``(k, j, i)`` of the volume's grid.
A box resampled to another spacing keeps its physical extent (``align_corners=False`` both ways), so a
probability map computed on the resampled grid goes back onto the box with the same call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ScaleIntensityRange

from pipelines.errors import PreprocessError

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # ((k0,k1),(j0,j1),(i0,i1)), half-open


def window_hu(array: np.ndarray | torch.Tensor, hu_window: tuple[float, float]) -> torch.Tensor:
    """HU clipped to ``hu_window`` and scaled to [0, 1] (MONAI ``ScaleIntensityRange``), float32."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    if not hi > lo:
        raise PreprocessError(f"HU window {hu_window} is empty; the model card must give [low, high] with low < high")
    t = torch.as_tensor(array).float()
    out = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True)(t)
    return out.as_tensor() if hasattr(out, "as_tensor") else out  # a plain tensor, not a MetaTensor


def spacing_kji(spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Spacing (sx, sy, sz) along (i, j, k) → per array axis (k, j, i)."""
    sx, sy, sz = spacing_xyz
    return np.array([sz, sy, sx], dtype=np.float64)


def grid_size(box_shape: tuple[int, int, int], spacing_xyz, target_mm: float, divisor: int = 1) -> tuple[int, ...]:
    """Voxel counts (k, j, i) that cover a box at about ``target_mm`` isotropic, rounded to ``divisor``."""
    ext = np.asarray(box_shape, dtype=np.float64) * spacing_kji(spacing_xyz)
    n = np.maximum(np.round(ext / float(target_mm)), 1).astype(int)
    if divisor > 1:
        n = np.maximum(divisor, (np.ceil(n / divisor) * divisor).astype(int))
    return tuple(int(v) for v in n)


def resample(t: torch.Tensor, size: tuple[int, int, int], *, mode: str = "trilinear") -> torch.Tensor:
    """Resample a [D,H,W] or [B,C,D,H,W] tensor to ``size`` (same physical box, align_corners=False)."""
    squeeze = t.ndim == 3
    x = t[None, None] if squeeze else t
    if tuple(x.shape[2:]) == tuple(size):
        y = x
    elif mode == "nearest":
        y = F.interpolate(x.float(), size=size, mode="nearest-exact")
    else:
        y = F.interpolate(x.float(), size=size, mode="trilinear", align_corners=False)
    return y[0, 0] if squeeze else y


def crop(array: np.ndarray, box: Box) -> np.ndarray:
    (k0, k1), (j0, j1), (i0, i1) = box
    return array[k0:k1, j0:j1, i0:i1]


def mask_box(mask: np.ndarray, margin_mm: float, spacing_xyz) -> Box | None:
    """Bounding box of ``mask > 0`` grown by ``margin_mm`` on every side, clipped to the grid (None if empty)."""
    nz = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        return None
    return grow_box(tuple((int(n[0]), int(n[-1]) + 1) for n in nz), margin_mm, spacing_xyz, mask.shape)  # type: ignore[arg-type]


def grow_box(box: Box, margin_mm: float, spacing_xyz, shape: tuple[int, ...]) -> Box:
    m = np.ceil(float(margin_mm) / spacing_kji(spacing_xyz)).astype(int)
    return tuple((max(0, lo - int(m[a])), min(int(shape[a]), hi + int(m[a]))) for a, (lo, hi) in enumerate(box))  # type: ignore[return-value]


@dataclass
class PreparedCrop:
    """A box of the volume, windowed and resampled for the network: ``image`` is [1, 1, D, H, W]."""

    box: Box
    image: torch.Tensor
    spacing_mm: tuple[float, float, float]  # actual (x, y, z) spacing of ``image``


def prepare_crop(array: np.ndarray, spacing_xyz, box: Box, hu_window, target_mm: float, *, divisor: int = 1,
                 device: torch.device | None = None) -> PreparedCrop:
    """Crop ``box`` from a HU array, window it and resample it to about ``target_mm`` isotropic on ``device``."""
    sub = crop(array, box)
    if sub.size == 0:
        raise PreprocessError(f"empty crop {box} of an array of shape {array.shape}")
    size = grid_size(sub.shape, spacing_xyz, target_mm, divisor)
    t = torch.from_numpy(np.ascontiguousarray(sub)).to(device or "cpu")
    img = resample(window_hu(t, hu_window)[None, None], size)
    sp = spacing_kji(spacing_xyz) * np.asarray(sub.shape) / np.asarray(size)
    return PreparedCrop(box=box, image=img, spacing_mm=(float(sp[2]), float(sp[1]), float(sp[0])))
