"""Montage of synthetic axial slices beside real chest CT slices (``docs/synthetic_montage.png``).

    python -m training.synthetic.montage [--preset full] [--seeds 11 12 13] [--out docs/synthetic_montage.png]

One row per synthetic study: lung window at three heights, mediastinal window, and a zoom on the largest
nodule with its label outline (the 50 % partial-volume truth). The last rows are real series from
``../shared/data/ct`` (skipped when absent), shown the same way.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LUNG = (-1350, 150)
MEDIASTINUM = (-160, 240)
REAL_SERIES = (
    ("lung-pet-ct-dx-a0001/series-2-lung-kernel", "Lung-PET-CT-Dx A0001 (Philips, 5 mm, lung kernel)"),
    ("lidc-idri-0001", "LIDC-IDRI-0001 slab (GE, 2.5 mm)"),
)


def _levels(lung: np.ndarray) -> list[int]:
    ks = np.nonzero(lung.reshape(lung.shape[0], -1).any(1))[0]
    if len(ks) == 0:
        n = lung.shape[0]
        return [n // 4, n // 2, 3 * n // 4]
    return [int(ks[0] + f * (ks[-1] - ks[0])) for f in (0.25, 0.55, 0.85)]


def _zoom(ax, img, k, j, i, half, vmin, vmax, mask=None, title=""):
    j0, j1 = max(0, j - half), min(img.shape[1], j + half)
    i0, i1 = max(0, i - half), min(img.shape[2], i + half)
    ax.imshow(img[k, j0:j1, i0:i1], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    if mask is not None and mask[k, j0:j1, i0:i1].any():
        ax.contour(mask[k, j0:j1, i0:i1].astype(float), levels=[0.5], colors=["#ff3030"], linewidths=0.8)
    ax.set_title(title, fontsize=8)


def make_montage(seeds: list[int], preset: str, out: Path, real_root: Path | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.synthetic import SynthConfig, make_study

    rows = []
    for seed in seeds:
        s = make_study(seed, SynthConfig.preset(preset))
        v = s.volume
        meta = v.metadata
        nods = sorted(s.truth["nodules"], key=lambda n: -n["mean_diameter_mm"])
        label = (f"synthetic seed {seed}: {v.array.shape[2]}x{v.array.shape[1]}x{v.array.shape[0]}, "
                 f"{v.spacing_mm[0]:.2f} mm px, {v.spacing_mm[2]:g} mm slices, {meta['kernel']}, "
                 f"{meta['ctdi_vol_mgy']:.1f} mGy")
        nod = None
        if nods:
            n = nods[0]
            i, j, k = n["center_voxel"]
            nod = (k, j, i, s.labels == n["label"],
                   f"{n['composition']} {n['shape']} {n['placement']}, {n['mean_diameter_mm']:.1f} mm, {n['lobe']}")
        rows.append((label, v.array, v.spacing_mm, _levels(s.lung_labels), nod))
    if real_root is not None and real_root.is_dir():
        from pipelines.ingest import load_study

        for rel, name in REAL_SERIES:
            p = real_root / rel
            if not p.exists():
                continue
            res = load_study(p)
            a = res.volume.array
            res.close()
            n = a.shape[0]
            levels = [n // 5, n // 2, 4 * n // 5] if n > 20 else [n // 2] * 3
            nod = None
            if "lidc" in rel:  # a slab through a nodule: show the lung region of its middle slice
                nod = (n // 2, a.shape[1] // 2, a.shape[2] // 3, None, "real lung, middle of the slab")
            rows.append((f"REAL: {name}", a, res.volume.spacing_mm, levels, nod))
    fig, axes = plt.subplots(len(rows), 5, figsize=(17, 3.5 * len(rows)))
    axes = np.atleast_2d(axes)
    for r, (label, a, spacing, levels, nod) in enumerate(rows):
        for c, k in enumerate(levels):
            axes[r, c].imshow(a[k], cmap="gray", vmin=LUNG[0], vmax=LUNG[1], interpolation="bilinear")
            axes[r, c].set_title(f"slice k={k}, lung window", fontsize=8)
        axes[r, 3].imshow(a[levels[1]], cmap="gray", vmin=MEDIASTINUM[0], vmax=MEDIASTINUM[1], interpolation="bilinear")
        axes[r, 3].set_title("mediastinal window", fontsize=8)
        if nod is not None:
            k, j, i, mask, title = nod
            half = int(round(40.0 / spacing[0]))
            _zoom(axes[r, 4], a, k, j, i, half, *LUNG, mask, title + ("" if mask is None else " (red: label)"))
        else:
            axes[r, 4].set_visible(False)
        axes[r, 0].text(0.0, 1.12, label, transform=axes[r, 0].transAxes, fontsize=10, fontweight="bold")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    from pipelines.paths import REPO_ROOT, SHARED_DATA_DIR

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "synthetic_montage.png")
    ap.add_argument("--real", type=Path, default=SHARED_DATA_DIR / "ct")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = make_montage(args.seeds, args.preset, args.out, args.real)
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
