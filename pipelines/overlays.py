"""Overlay PNGs: one per AI finding, on the axial slice where it is largest, for the radiologist's check.

Each image has the whole axial slice in the lung window (W1500/L-600, ``configs/overlays.yaml``) with a box
around the finding, and a zoomed panel with the AI outline, its long axis and perpendicular short axis
(Fleischner 2017 / Lung-RADS v2022 definitions, measured by ``pipelines.measure``), a 10 mm scale bar, the
AI's and the report's numbers, and the patient orientation (R/L, A/P). Slices are shown in the
radiological convention (patient's right on the image's left, anterior at the top) whatever the
storage order. No patient identifiers are drawn: only the finding id, the slice's InstanceNumber and
the measurements.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import load_yaml_config
from pipelines.types import field_of as _get
from pipelines.errors import PreprocessError
from pipelines.types import AIFinding, Volume

logger = logging.getLogger(__name__)


class WindowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "lung"
    level_hu: float = -600.0
    width_hu: float = Field(1500.0, gt=0)


class ColorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outline: str = "#ffc800"
    long_axis: str = "#00e5ff"
    short_axis: str = "#ff4fd8"
    box: str = "#ffc800"
    text: str = "#ffffff"


class OverlayConfig(BaseModel):
    """Display settings for overlay PNGs; defaults and sources in ``configs/overlays.yaml``."""

    model_config = ConfigDict(extra="forbid")
    window: WindowConfig = Field(default_factory=WindowConfig)
    zoom_factor: float = Field(4.0, gt=0)
    min_field_mm: float = Field(40.0, gt=0)
    max_field_mm: float = Field(160.0, gt=0)
    scale_bar_mm: float = Field(10.0, gt=0)
    colors: ColorConfig = Field(default_factory=ColorConfig)
    outline_width: float = Field(1.2, gt=0)
    axis_width: float = Field(1.4, gt=0)
    dpi: int = Field(110, gt=10)
    figure_inches: tuple[float, float] = (11.0, 6.4)
    footer: str = "preread AI pre-read: not a diagnosis; not for clinical use."


def load_overlay_config(path: str | Path | None = None) -> OverlayConfig:
    return load_yaml_config(OverlayConfig, "overlays.yaml", path, what="overlay config")


def _safe_name(fid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", fid).strip("._") or "finding"


def _fmt(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def overlay_text(finding: AIFinding, measurement: Any = None, report_size: str | None = None) -> list[str]:
    """The lines printed on a finding's overlay: the AI's numbers, then the report's (no identifiers)."""
    m = measurement
    long_mm = _get(m, "long_axis_mm", finding.long_axis_mm)
    short_mm = _get(m, "short_axis_mm", finding.short_axis_mm)
    mean_mm = _get(m, "mean_diameter_mm", finding.mean_diameter_mm)
    unc = _get(m, "uncertainty_mm", finding.uncertainty_mm)
    vol = _get(m, "volume_mm3", finding.volume_mm3)
    comp = _get(m, "composition", finding.composition)
    loc = finding.location
    where = " ".join(x for x in ((loc.side or ""), (loc.lobe or "")) if x) or "location n/a"
    lines = [
        f"AI: {_fmt(long_mm)} x {_fmt(short_mm)} mm (long x short axis), mean {_fmt(mean_mm)} mm "
        f"(\u00b1{_fmt(unc)}), volume {_fmt(vol, 0)} mm\u00b3",
        f"    {comp}, {where}, confidence {finding.confidence:.2f}",
    ]
    if report_size:
        lines.append(report_size if report_size.lower().startswith("report") else f"Report: {report_size}")
    else:
        lines.append("Report: no matching finding")
    return lines


def _display_transform(volume: Volume):
    """Flips that put the patient's right on the image's left and anterior at the top (LPS)."""
    d = volume.direction
    flip_i = d[0, 0] < 0  # i runs towards the patient's right: flip so that it runs to the left
    flip_j = d[1, 1] < 0  # j runs anteriorly: flip so that anterior is at the top
    return flip_i, flip_j


def _largest_slice(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


def render_overlays(
    volume: Volume,
    findings: Sequence[AIFinding],
    masks: Mapping[str, np.ndarray] | None,
    measurements: Mapping[str, Any] | Sequence[Any] | None,
    report_sizes: Mapping[str, str] | None,
    out_dir: str | Path,
    *,
    config: OverlayConfig | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<finding id>.png`` for each finding; return the paths in the findings' order.

    ``masks[id]``: bool [k, j, i] on the volume's grid (the AI outline); ``measurements[id]`` (or a list in
    the findings' order): a ``pipelines.measure.LesionMeasurement`` (axial slice, axis endpoints in voxel
    (i, j, k)); ``report_sizes[id]``: the report's words for its size. Missing entries are drawn without.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib import patheffects
    from matplotlib.patches import Rectangle
    from skimage.measure import find_contours

    cfg = config or load_overlay_config()
    masks = masks or {}
    report_sizes = report_sizes or {}
    if isinstance(measurements, Mapping):
        meas = dict(measurements)
    elif measurements is None:
        meas = {}
    else:
        meas = {f.id: m for f, m in zip(findings, measurements)}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    K, J, I = volume.array.shape
    sx, sy, _ = volume.spacing_mm
    flip_i, flip_j = _display_transform(volume)
    lo = cfg.window.level_hu - cfg.window.width_hu / 2
    hi = cfg.window.level_hu + cfg.window.width_hu / 2

    def disp(i, j):
        """Stored (i, j) → displayed (column, row)."""
        return (I - 1 - i if flip_i else i), (J - 1 - j if flip_j else j)

    halo = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    paths: list[Path] = []
    used: set[str] = set()
    for f in findings:
        m = meas.get(f.id)
        mask = masks.get(f.id)
        if mask is not None and mask.shape != volume.array.shape:
            raise PreprocessError(f"overlay mask for {f.id} has shape {mask.shape}, the volume {volume.array.shape}")
        k = _get(m, "axial_slice_k", _get(f, "axial_slice_k"))
        if k is None:
            k = _largest_slice(mask) if mask is not None and mask.any() else int(f.center_voxel[2])
        k = int(np.clip(k, 0, K - 1))
        sl = volume.array[k].astype(np.float32)
        if flip_i:
            sl = sl[:, ::-1]
        if flip_j:
            sl = sl[::-1, :]
        long_ep = _get(m, "long_axis_endpoints_voxel", _get(f, "long_axis_endpoints_voxel"))
        short_ep = _get(m, "short_axis_endpoints_voxel", _get(f, "short_axis_endpoints_voxel"))
        # centre on the slice: the mask's centroid there, or the finding's centre
        if mask is not None and mask[k].any():
            jj, ii = np.nonzero(mask[k])
            ci, cj = float(ii.mean()), float(jj.mean())
        else:
            ci, cj = float(f.center_voxel[0]), float(f.center_voxel[1])
        dci, dcj = disp(ci, cj)
        long_mm = float(_get(m, "long_axis_mm", f.long_axis_mm) or 0.0)
        field = float(np.clip(cfg.zoom_factor * long_mm, cfg.min_field_mm, cfg.max_field_mm))
        half_i, half_j = field / 2 / sx, field / 2 / sy

        fig = plt.figure(figsize=cfg.figure_inches, dpi=cfg.dpi, facecolor="black")
        ax_full = fig.add_axes((0.01, 0.20, 0.47, 0.72))
        ax_zoom = fig.add_axes((0.51, 0.20, 0.47, 0.72))
        for ax in (ax_full, ax_zoom):
            ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest" if ax is ax_zoom else "antialiased",
                      aspect=sy / sx)
            ax.set_axis_off()
        ax_full.add_patch(Rectangle((dci - half_i, dcj - half_j), 2 * half_i, 2 * half_j, fill=False,
                                    edgecolor=cfg.colors.box, linewidth=1.0))
        ax_zoom.set_xlim(dci - half_i, dci + half_i)
        ax_zoom.set_ylim(dcj + half_j, dcj - half_j)
        if mask is not None and mask[k].any():
            m2 = mask[k].astype(np.float32)
            if flip_i:
                m2 = m2[:, ::-1]
            if flip_j:
                m2 = m2[::-1, :]
            for c in find_contours(np.pad(m2, 1), 0.5):
                ax_zoom.plot(c[:, 1] - 1, c[:, 0] - 1, color=cfg.colors.outline, linewidth=cfg.outline_width)
        for ep, color, label in ((long_ep, cfg.colors.long_axis, "long"), (short_ep, cfg.colors.short_axis, "short")):
            if ep is None or len(ep) != 2:
                continue
            (i0, j0, _), (i1, j1, _) = ep
            (x0, y0), (x1, y1) = disp(i0, j0), disp(i1, j1)
            ax_zoom.plot([x0, x1], [y0, y1], color=color, linewidth=cfg.axis_width, marker="o", markersize=2.5)
        # scale bar, bottom left of the zoom panel
        bx0 = dci - half_i + 0.08 * 2 * half_i
        by0 = dcj + half_j - 0.07 * 2 * half_j
        ax_zoom.plot([bx0, bx0 + cfg.scale_bar_mm / sx], [by0, by0], color="white", linewidth=2.0)
        ax_zoom.text(bx0, by0 - 0.02 * 2 * half_j, f"{cfg.scale_bar_mm:g} mm", color="white", fontsize=9,
                     va="bottom", path_effects=halo)
        # orientation labels (radiological convention after the flips above)
        for ax in (ax_full, ax_zoom):
            kw = dict(transform=ax.transAxes, color="white", fontweight="bold", path_effects=halo)
            ax.text(0.01, 0.5, "R", fontsize=13, va="center", ha="left", **kw)
            ax.text(0.99, 0.5, "L", fontsize=13, va="center", ha="right", **kw)
            ax.text(0.5, 0.99, "A", fontsize=11, va="top", ha="center", **kw)
            ax.text(0.5, 0.01, "P", fontsize=11, va="bottom", ha="center", **kw)
        inst = _get(m, "instance_number", f.instance_number)
        head = (f"Finding {f.id}   axial image {inst if inst is not None else 'n/a'} (slice index {k})   "
                f"{cfg.window.name} window W{cfg.window.width_hu:g} L{cfg.window.level_hu:g}")
        fig.text(0.01, 0.965, head, color=cfg.colors.text, fontsize=10, va="center", family="monospace")
        lines = overlay_text(f, m, report_sizes.get(f.id))
        fig.text(0.01, 0.115, "\n".join(lines), color=cfg.colors.text, fontsize=10, va="center", family="monospace",
                 linespacing=1.4)
        fig.text(0.51, 0.185, "AI outline", color=cfg.colors.outline, fontsize=9, va="top")
        fig.text(0.59, 0.185, "long axis", color=cfg.colors.long_axis, fontsize=9, va="top")
        fig.text(0.66, 0.185, "short axis (perpendicular)", color=cfg.colors.short_axis, fontsize=9, va="top")
        fig.text(0.01, 0.02, cfg.footer, color="#bbbbbb", fontsize=8, va="bottom")
        name = _safe_name(f.id)
        while name in used:
            name += "_"
        used.add(name)
        p = out / f"{name}.png"
        fig.savefig(p, dpi=cfg.dpi, facecolor="black", metadata={"Software": None})
        plt.close(fig)
        paths.append(p)
        logger.info("overlay for finding %s on slice %d written", f.id, k)
    return paths
