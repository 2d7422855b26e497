"""Images for the web viewer, rendered once by the worker when a study is done.

For each slice ``k`` of the analysed volume (the order of ``Volume.array``): ``viewer/slices/kkkk.png``, the
slice in the lung window of ``configs/viewer.yaml``, and ``viewer/outlines/kkkk.png``, the AI findings'
outlines as a transparent layer, taken from the study's DICOM SEG (frames mapped to slices by their
referenced SOPInstanceUID, else by ImagePositionPatient). ``viewer/viewer.json`` indexes them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from scipy import ndimage

from pipelines.config import load_yaml_config

log = logging.getLogger(__name__)


class WindowConfig(BaseModel):
    name: str = "lung"
    level_hu: float
    width_hu: float = Field(gt=0)


class OutlineConfig(BaseModel):
    rgba: tuple[int, int, int, int] = (255, 200, 0, 255)
    thickness_px: int = Field(default=1, ge=1, le=5)


class ViewerConfig(BaseModel):
    window: WindowConfig
    outline: OutlineConfig = Field(default_factory=OutlineConfig)


def load_viewer_config(path: Path | None = None) -> ViewerConfig:
    return load_yaml_config(ViewerConfig, "viewer.yaml", path, what="viewer configuration")


def window_to_uint8(hu: np.ndarray, level: float, width: float) -> np.ndarray:
    lo = level - width / 2.0
    return (np.clip((hu.astype(np.float32) - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def seg_masks_by_slice(seg_path: Path, volume) -> dict[int, list[tuple[int, np.ndarray]]]:
    """{slice k: [(segment number, 2-D bool mask [j, i])]} from a DICOM SEG over ``volume``'s slices."""
    import pydicom

    seg = pydicom.dcmread(seg_path)
    pixels = seg.pixel_array
    if pixels.ndim == 2:
        pixels = pixels[None]
    sop_to_k = {uid: k for k, uid in enumerate(volume.sop_instance_uids or []) if uid}
    z_axis = volume.direction[:, 2]
    slice_pos = np.array([float(np.dot(volume.voxel_to_mm((0, 0, k)), z_axis)) for k in range(volume.array.shape[0])])
    tol = max(min(volume.spacing_mm[2] / 2.0, 2.0), 0.01)
    out: dict[int, list[tuple[int, np.ndarray]]] = {}
    from pipelines.dicom_out import frame_segment_numbers

    seg_numbers = frame_segment_numbers(seg)
    for f, frame_fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if f >= pixels.shape[0]:
            break
        k = None
        try:
            src = frame_fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            k = sop_to_k.get(str(src))
        except (AttributeError, IndexError):
            pass
        if k is None:
            try:
                ipp = np.array([float(x) for x in frame_fg.PlanePositionSequence[0].ImagePositionPatient])
                d = np.abs(slice_pos - float(np.dot(ipp, z_axis)))
                if d.min() <= tol:
                    k = int(d.argmin())
            except (AttributeError, IndexError):
                pass
        if k is None:
            continue
        seg_no = seg_numbers[f]
        if seg_no is None:
            continue
        mask = pixels[f] > 0
        if mask.shape != volume.array.shape[1:]:
            continue
        out.setdefault(k, []).append((seg_no, mask))
    return out


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness)


def render_viewer_assets(study_path: Path, result: dict, out_dir: Path, config: ViewerConfig | None = None) -> Path:
    """Write ``out_dir/viewer/`` (slices, outlines, viewer.json) for an analysed study; returns that folder."""
    from pipelines.ingest import read_volume

    cfg = config or load_viewer_config()
    volume = read_volume(study_path, series_uid=result.get("series_uid"))
    vdir = out_dir / "viewer"
    (vdir / "slices").mkdir(parents=True, exist_ok=True)
    (vdir / "outlines").mkdir(parents=True, exist_ok=True)
    seg_path = ((result.get("artifacts") or {}).get("seg"))
    masks = seg_masks_by_slice(Path(seg_path), volume) if seg_path and Path(seg_path).is_file() else {}
    n, rows, cols = volume.array.shape
    colour = np.array(cfg.outline.rgba, dtype=np.uint8)
    for k in range(n):
        img = window_to_uint8(volume.array[k], cfg.window.level_hu, cfg.window.width_hu)
        Image.fromarray(img, mode="L").save(vdir / "slices" / f"{k:04d}.png", optimize=False, compress_level=1)
        rgba = np.zeros((rows, cols, 4), dtype=np.uint8)
        for _seg_no, m in masks.get(k, []):
            rgba[_outline(m, cfg.outline.thickness_px)] = colour
        Image.fromarray(rgba, mode="RGBA").save(vdir / "outlines" / f"{k:04d}.png", compress_level=1)
    findings = []
    for f in result.get("ai_findings") or []:
        cv = f.get("center_voxel") or [0, 0, 0]
        findings.append({"id": f.get("id"), "k": int(cv[2]), "instance_number": f.get("instance_number"),
                         "center_voxel": cv})
    index = {
        "slices": int(n), "rows": int(rows), "cols": int(cols),
        "spacing_mm": [float(s) for s in volume.spacing_mm],
        "instance_numbers": [None if x is None else int(x) for x in (volume.instance_numbers or [None] * n)],
        "window": cfg.window.model_dump(), "findings": findings,
        "outlined_slices": sorted(int(k) for k in masks),
    }
    (vdir / "viewer.json").write_text(json.dumps(index))
    log.info("viewer images rendered: %d slices, %d with outlines", n, len(masks))
    return vdir
