"""``preread measure`` end to end on files (NIfTI image, NRRD/MHA masks), and on the real LIDC slab."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pipelines.measure import measure_mask
from serving.cli import main


def _write_case(tmp_path):
    sp = (0.7, 0.7, 1.25)
    k, j, i = np.mgrid[0:30, 0:60, 0:60]
    x, y, z = (i - 20.2) * sp[0], (j - 29.7) * sp[1], (k - 15.1) * sp[2]
    a = x ** 2 + y ** 2 + z ** 2 <= 25.0  # 10 mm
    b = (x - 20) ** 2 + (y + 8) ** 2 + (z - 3) ** 2 <= 9.0  # 6 mm
    hu = np.where(a | b, 40, -850).astype(np.int16)
    img = sitk.GetImageFromArray(hu)
    img.SetSpacing(sp)
    img.SetOrigin((40.0, -30.0, 100.0))
    sitk.WriteImage(img, str(tmp_path / "ct.nii.gz"))
    m = sitk.GetImageFromArray((a | b).astype(np.uint8))
    m.CopyInformation(img)
    sitk.WriteImage(m, str(tmp_path / "mask.nrrd"))
    wrong = sitk.GetImageFromArray((a | b).astype(np.uint8))
    sitk.WriteImage(wrong, str(tmp_path / "wrong_grid.mha"))
    return tmp_path / "ct.nii.gz", tmp_path / "mask.nrrd", tmp_path / "wrong_grid.mha"


def test_cli_measures_each_component(tmp_path, capsys):
    img, mask, _ = _write_case(tmp_path)
    rc = main(["measure", "--image", str(img), "--mask", str(mask), "--json", "-"])
    out = capsys.readouterr().out
    assert rc == 0
    data = json.loads(out)
    lesions = data["lesions"]
    assert len(lesions) == 2
    longs = sorted(le["long_axis_mm"] for le in lesions)
    assert longs[0] == pytest.approx(6.2, abs=0.5) and longs[1] == pytest.approx(10.2, abs=0.5)
    for le in lesions:
        assert le["location"]["side"] == "left"  # origin x = +40 mm: patient left
        assert set(le) >= {"center_mm", "center_voxel", "instance_number", "mean_diameter_mm", "volume_mm3",
                           "uncertainty_mm", "composition", "long_axis_endpoints_mm", "short_axis_endpoints_voxel"}


def test_cli_rejects_a_mask_on_another_grid(tmp_path, capsys):
    img, _, wrong = _write_case(tmp_path)
    rc = main(["measure", "--image", str(img), "--mask", str(wrong), "--json", "-"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "MeasureError" in err and "grid" in err and len(err.strip().splitlines()) == 1


def test_cli_rejects_an_empty_mask(tmp_path, capsys):
    img, mask, _ = _write_case(tmp_path)
    empty = sitk.ReadImage(str(mask)) * 0
    sitk.WriteImage(empty, str(tmp_path / "empty.nrrd"))
    rc = main(["measure", "--image", str(img), "--mask", str(tmp_path / "empty.nrrd"), "--json", "-"])
    assert rc == 2 and "empty" in capsys.readouterr().err


@pytest.mark.shared_data
def test_lidc_reader_contours_on_the_real_slab(shared_data):
    """Each LIDC reader's contour, rasterised like pylidc, measured on the real CT: the long axis sits about
    one pixel inside pylidc's diameter (LIDC outlines run through the first pixels outside the nodule)."""
    from benchmarks.measurement_accuracy import parse_lidc_xml, pylidc_diameter, rasterise_polygon
    from pipelines.measure_io import read_image

    case = shared_data / "ct" / "lidc-idri-0001"
    vol = read_image(case)
    sop_to_k = {s: k for k, s in enumerate(vol.sop_instance_uids) if s}
    measured = 0
    for nod in parse_lidc_xml(case / "annotations-lidc.xml"):
        rois = nod["rois"]
        if any(len(r[3]) < 3 for r in rois) or not all(r[1] in sop_to_k for r in rois):
            continue
        mask = np.zeros(vol.array.shape, dtype=bool)
        for _, sop, inc, xy in sorted(rois, key=lambda r: not r[2]):
            sl = rasterise_polygon(xy, vol.array.shape[1:])
            k = sop_to_k[sop]
            mask[k] = (mask[k] | sl) if inc else (mask[k] & ~sl)
        m = measure_mask(vol, mask)
        ref = pylidc_diameter([r[3] for r in rois if r[2]], vol.spacing_mm[0])
        px = vol.spacing_mm[0]
        assert ref - 6 * px <= m.long_axis_mm <= ref + px
        assert m.composition == "solid" and m.partial_volume_refined
        assert m.instance_number is not None
        measured += 1
    assert measured >= 3
