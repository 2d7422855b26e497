"""Overlay PNGs: written per finding, in the radiological convention, with outline and numbers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.errors import PreprocessError
from pipelines.measure import measure_mask
from pipelines.overlays import load_overlay_config, overlay_text, render_overlays
from pipelines.types import Volume


def make_case(flip_i: bool = False):
    """A 'chest' of air-filled lungs in soft tissue with a 12 mm nodule in the patient's right lung."""
    K, J, I = 24, 128, 128
    sp = (1.2, 1.2, 2.0)
    a = np.full((K, J, I), 40, np.int16)
    k, j, i = np.meshgrid(np.arange(K), np.arange(J), np.arange(I), indexing="ij", sparse=True)
    x_lps = (i - 63.5) * sp[0]  # patient's right is LPS -x
    y = (j - 63.5) * sp[1]
    lungs = ((np.abs(x_lps) - 35) ** 2 / 25 ** 2 + y ** 2 / 50 ** 2) <= 1
    a[np.broadcast_to(lungs, a.shape)] = -850
    nodule = ((x_lps + 35) ** 2 + (y - 5) ** 2 + ((k - 12) * sp[2]) ** 2) <= 6 ** 2
    a[nodule] = 30
    mask = np.broadcast_to(nodule, a.shape).copy()
    vol = Volume(array=a, spacing_mm=sp, origin_mm=(-63.5 * sp[0], -63.5 * sp[1], 0.0),
                 instance_numbers=list(range(101, 101 + K)))
    if flip_i:  # same anatomy, i stored running to the patient's right
        vol = Volume(array=a[:, :, ::-1].copy(), spacing_mm=sp, origin_mm=(63.5 * sp[0], -63.5 * sp[1], 0.0),
                     direction=np.diag([-1.0, 1.0, 1.0]), instance_numbers=vol.instance_numbers)
        mask = mask[:, :, ::-1].copy()
    m = measure_mask(vol, mask)
    return vol, mask, m, m.to_ai_finding("n1", 0.9)


def _yellow(png) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return (rgb[..., 0] > 200) & (rgb[..., 1] > 150) & (rgb[..., 1] < 230) & (rgb[..., 2] < 80)


@pytest.mark.parametrize("flip_i", [False, True])
def test_overlay_written_with_outline_on_the_patients_right(tmp_path, flip_i):
    vol, mask, m, f = make_case(flip_i)
    paths = render_overlays(vol, [f], {"n1": mask}, {"n1": m}, {"n1": "Report: 5 mm"}, tmp_path)
    assert [p.name for p in paths] == ["n1.png"]
    cfg = load_overlay_config()
    img = Image.open(paths[0])
    assert img.size == (round(cfg.figure_inches[0] * cfg.dpi), round(cfg.figure_inches[1] * cfg.dpi))
    y = _yellow(paths[0])
    W = y.shape[1]
    full = y[:, : int(0.49 * W)]
    zoom = y[:, int(0.51 * W):]
    assert zoom.sum() > 50  # the AI outline is drawn in the zoomed panel
    # the finding's box on the whole slice is on the image's left = the patient's right, either storage order
    cols = np.nonzero(full.any(axis=0))[0]
    assert cols.mean() < 0.245 * W


def test_overlay_text_has_both_numbers_and_no_identifiers():
    vol, mask, m, f = make_case()
    vol.metadata["PatientName"] = "DOE^JANE"
    lines = overlay_text(f, m, "Report: 5 mm")
    text = "\n".join(lines)
    assert f"{m.long_axis_mm:.1f} x {m.short_axis_mm:.1f} mm" in text
    assert "Report: 5 mm" in text and "DOE" not in text
    assert overlay_text(f, m, None)[-1] == "Report: no matching finding"


def test_overlay_without_mask_or_measurement_and_bad_mask(tmp_path):
    vol, mask, m, f = make_case()
    paths = render_overlays(vol, [f], {}, None, None, tmp_path / "o")
    assert paths[0].is_file()
    with pytest.raises(PreprocessError, match="shape"):
        render_overlays(vol, [f], {"n1": mask[:3]}, None, None, tmp_path / "o2")


def test_overlay_file_names_are_safe_and_unique(tmp_path):
    vol, mask, m, f = make_case()
    f2 = f.model_copy(update={"id": "../n1"})
    f3 = f.model_copy(update={"id": "n1"})
    paths = render_overlays(vol, [f, f2, f3], {}, None, None, tmp_path)
    assert len({p.name for p in paths}) == 3
    assert all(p.parent == tmp_path for p in paths)
