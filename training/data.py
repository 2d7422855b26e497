"""Training data: synthetic studies held in memory and patches sampled from them with MONAI transforms.

Each study is reduced to what patch sampling needs: the HU array, its spacing, the nodule mask and three
pools of sampling points (voxel indices [k, j, i]): nodule voxels, *hard negatives* (vessel-like voxels
inside the lungs: HU above ``vessel_hu`` and not nodule), *wall* voxels (dense tissue outside the lungs but
within ``wall_mm`` of them: chest wall, mediastinum, hila, diaphragm, which the lung box also holds) and
ordinary lung voxels. Nodule points are drawn one nodule at a time (a nodule uniformly, then one of its
voxels), so that small and faint nodules are seen as often as large ones. A patch is centred
near a point of one pool (the pool chosen with the configured fractions), cut at a random isotropic
spacing (scale augmentation, so one network serves the coarse and the fine pass), flipped and
intensity-jittered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    MapTransform,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Randomizable,
)

from pipelines.preprocess import resample, spacing_kji, window_hu

log = logging.getLogger(__name__)

POOLS = ("nodule", "vessel", "wall", "lung")


@dataclass
class SamplingConfig:
    patch_size: tuple[int, int, int]
    spacing_range_mm: tuple[float, float]
    hu_window: tuple[float, float]
    fractions: dict[str, float]  # pool → probability
    vessel_hu: float = -400.0
    wall_mm: float = 12.0
    noise_std: float = 0.02  # Gaussian noise on the [0, 1] windowed image (0.02 = 28 HU)
    noise_prob: float = 0.3
    jitter: float = 0.35  # a patch's centre moves up to this fraction of the patch from the point
    max_points: int = 20000


class LoadSyntheticStudyd(MapTransform):
    """``{"seed": s, "preset": p}`` → the synthetic study's arrays and sampling pools (deterministic; cached).

    ``overrides`` are :class:`SynthConfig` fields over the preset; ``cache_dir`` (optional) keeps each
    generated study as ``.npz`` so later runs skip the generator.
    """

    def __init__(self, vessel_hu: float, max_points: int, overrides: dict | None = None,
                 cache_dir: Path | str | None = None):
        super().__init__(keys=["seed"])
        self.vessel_hu, self.max_points = vessel_hu, max_points
        self.overrides = dict(overrides or {})
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def __call__(self, data):
        seed, preset = int(data["seed"]), data.get("preset", "fast")
        hu, spacing, nodule, lung = load_synthetic_arrays(seed, preset, self.overrides, self.cache_dir)
        return study_item(hu, spacing, nodule, lung, seed=seed, vessel_hu=self.vessel_hu, max_points=self.max_points)


def load_synthetic_arrays(seed: int, preset: str, overrides: dict | None = None, cache_dir: Path | None = None):
    """(HU int16, spacing (x, y, z), nodule bool, lung bool) of a synthetic study, from the disk cache if there."""
    from training.synthetic import SynthConfig, make_study

    key = hashlib.sha256(json.dumps([preset, overrides or {}, generator_version()], sort_keys=True).encode()).hexdigest()[:10]
    p = cache_dir / f"{preset}-{key}-{seed}.npz" if cache_dir else None
    if p is not None and p.is_file():
        z = np.load(p)
        return z["hu"], tuple(float(v) for v in z["spacing"]), z["nodule"], z["lung"]
    cfg = SynthConfig.preset(preset, **{k: tuple(v) if isinstance(v, list) else v for k, v in (overrides or {}).items()})
    study = make_study(seed, cfg)
    out = (study.volume.array.astype(np.int16), study.volume.spacing_mm, np.asarray(study.labels) > 0,
           np.asarray(study.lung_labels) > 0)
    if p is not None:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp.npz")
        np.savez(tmp, hu=out[0], spacing=np.asarray(out[1]), nodule=out[2], lung=out[3])
        os.replace(tmp, p)
    return out


def generator_version() -> str:
    """A digest of the synthetic generator's source: cached studies from an older generator are not reused."""
    src = Path(__file__).resolve().parent / "synthetic"
    h = hashlib.sha256()
    for f in sorted(src.glob("*.py")):
        h.update(f.name.encode()); h.update(f.read_bytes())
    return h.hexdigest()[:12]


def study_item(hu: np.ndarray, spacing_xyz, nodule: np.ndarray, lung: np.ndarray, *, seed: int,
               vessel_hu: float = -400.0, wall_mm: float = 12.0, max_points: int = 20000) -> dict:
    rng = np.random.default_rng(seed)

    def pick(mask):
        idx = np.argwhere(mask)
        if len(idx) > max_points:
            idx = idx[rng.choice(len(idx), max_points, replace=False)]
        return idx.astype(np.int32)

    from scipy import ndimage

    comps, n_comp = ndimage.label(nodule) if nodule.any() else (None, 0)
    groups = [pick(comps == c) for c in range(1, n_comp + 1)] if n_comp else []
    vessel = lung & (hu > vessel_hu) & ~ndimage_dilate(nodule, 2)
    near = _near(lung, wall_mm, spacing_xyz)
    wall = near & ~lung & (hu > vessel_hu) & ~ndimage_dilate(nodule, 2)
    return {"seed": seed, "hu": hu.astype(np.int16), "spacing": tuple(float(s) for s in spacing_xyz),
            "nodule": nodule.astype(bool), "nodule_groups": [g for g in groups if len(g)], "points": {"nodule": pick(nodule), "vessel": pick(vessel),
                                                       "wall": pick(wall), "lung": pick(lung)}}


def _near(mask: np.ndarray, mm: float, spacing_xyz) -> np.ndarray:
    """Voxels within ``mm`` of ``mask`` (distance on a 2x-downsampled grid, for speed)."""
    from scipy import ndimage

    if not mask.any():
        return mask
    sub = mask[::2, ::2, ::2]
    d = ndimage.distance_transform_edt(~sub, sampling=tuple(2 * s for s in spacing_kji(spacing_xyz)))
    near = (d <= mm).repeat(2, 0).repeat(2, 1).repeat(2, 2)
    return near[:mask.shape[0], :mask.shape[1], :mask.shape[2]]


def ndimage_dilate(mask: np.ndarray, it: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(mask, iterations=it) if mask.any() else mask


def cut_patch(item: dict, centre_kji, spacing_mm: float, patch: tuple[int, int, int], hu_window) -> tuple[torch.Tensor, torch.Tensor]:
    """A patch of ``patch`` voxels at ``spacing_mm`` isotropic centred on ``centre_kji``: (image [1,D,H,W], label)."""
    hu, nod = item["hu"], item["nodule"]
    sp = spacing_kji(item["spacing"])
    ext = np.ceil(np.asarray(patch) * spacing_mm / sp).astype(int)  # native voxels per axis
    lo = np.round(np.asarray(centre_kji) - ext / 2).astype(int)
    hi = lo + ext
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, hu.shape)
    img = np.full(tuple(ext), -1000, dtype=np.float32)
    lab = np.zeros(tuple(ext), dtype=np.float32)
    dst = tuple(slice(a - l, b - l) for a, b, l in zip(src_lo, src_hi, lo))
    src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
    if all(b > a for a, b in zip(src_lo, src_hi)):
        img[dst] = hu[src]
        lab[dst] = nod[src]
    x = resample(window_hu(torch.from_numpy(img), hu_window), tuple(patch))[None]
    y = (resample(torch.from_numpy(lab), tuple(patch)) >= 0.5).float()[None]
    return x, y


class RandPatchd(Randomizable):
    """Cut a random patch (pool by ``fractions``, random spacing, jittered centre) from a study item."""

    def __init__(self, cfg: SamplingConfig):
        self.cfg = cfg
        pools = [p for p in POOLS if cfg.fractions.get(p, 0) > 0]
        w = np.asarray([cfg.fractions[p] for p in pools], dtype=np.float64)
        self.pools, self.weights = pools, w / w.sum()

    def __call__(self, item: dict) -> dict:
        cfg = self.cfg
        pool = self.R.choice(self.pools, p=self.weights)
        pts = item["points"][pool]
        groups = item.get("nodule_groups") or []
        if pool == "nodule" and groups:
            # one nodule drawn uniformly, then one of its voxels: small nodules are seen as often as big ones
            pts = groups[self.R.randint(len(groups))]
        if len(pts) == 0:
            pts = item["points"]["lung"] if len(item["points"]["lung"]) else np.array([[s // 2 for s in item["hu"].shape]])
        c = pts[self.R.randint(len(pts))].astype(np.float64)
        s = float(self.R.uniform(*cfg.spacing_range_mm))
        jitter_mm = cfg.jitter * np.asarray(cfg.patch_size) * s
        c = c + self.R.uniform(-1, 1, 3) * jitter_mm / spacing_kji(item["spacing"])
        x, y = cut_patch(item, c, s, cfg.patch_size, cfg.hu_window)
        return {"image": x, "label": y, "pool": pool}


def augmentations(noise_std: float = 0.02, noise_prob: float = 0.3) -> Compose:
    return Compose([
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1),
        RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=2),
        RandScaleIntensityd(keys=["image"], factors=0.08, prob=0.5),
        RandShiftIntensityd(keys=["image"], offsets=0.03, prob=0.5),
        RandGaussianNoised(keys=["image"], prob=noise_prob, std=noise_std),
    ])


class PatchStream(torch.utils.data.IterableDataset):
    """An endless stream of augmented patches from cached studies (a MONAI ``CacheDataset``)."""

    def __init__(self, studies: CacheDataset, cfg: SamplingConfig, seed: int):
        self.studies, self.cfg, self.seed = studies, cfg, seed
        self.sampler = RandPatchd(cfg)
        self.aug = augmentations(cfg.noise_std, cfg.noise_prob)

    def __iter__(self):
        rng = np.random.RandomState(self.seed)
        self.sampler.set_random_state(state=rng)
        self.aug.set_random_state(seed=int(rng.randint(2**31)))
        n = len(self.studies)
        while True:
            item = self.studies[int(rng.randint(n))]
            d = self.aug(self.sampler(item))
            yield {"image": _plain(d["image"]), "label": _plain(d["label"])}


def _plain(x) -> torch.Tensor:
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.float().contiguous()


def cache_studies(seeds: list[int], preset: str, cfg: SamplingConfig, *, overrides: dict | None = None,
                  cache_dir: Path | str | None = None, num_workers: int = 0) -> CacheDataset:
    """The studies of ``seeds`` in memory (MONAI ``CacheDataset``; no copy on access)."""
    data = [{"seed": s, "preset": preset} for s in seeds]
    return CacheDataset(data, transform=LoadSyntheticStudyd(cfg.vessel_hu, cfg.max_points, overrides, cache_dir),
                        cache_rate=1.0, num_workers=num_workers, progress=False, copy_cache=False)
