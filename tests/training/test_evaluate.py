"""FROC/CPM in the LUNA16 way, Dice, and the LIDC/VOC annotation readers on the real data."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import FROC_RATES, RefNodule, ScanDetections, dice, froc, match_scan


def ref(x, d=10.0, counted=True):
    return RefNodule(center_mm=np.array([x, 0.0, 0.0]), diameter_mm=d, counted=counted)


def test_hit_within_radius_only():
    scan = ScanDetections([np.array([4.9, 0, 0]), np.array([5.1, 0, 0])], [0.9, 0.8], [ref(0.0)])
    hit, ignored = match_scan(scan)
    assert hit == [0, None] and ignored == [False, False]


def test_froc_counts_duplicates_once_and_ignores_small_nodules():
    scans = [
        # two hits on one nodule (counted once), one hit on a small (ignored) nodule, one false positive
        ScanDetections([np.array([0.0, 0, 0]), np.array([1.0, 0, 0]), np.array([100.0, 0, 0]),
                        np.array([300.0, 0, 0])], [0.9, 0.95, 0.99, 0.6], [ref(0.0), ref(100.0, 3.0, counted=False)]),
        # a missed nodule, no candidates
        ScanDetections([], [], [ref(50.0)]),
    ]
    r = froc(scans)
    assert r["nodules"] == 2 and r["scans"] == 2
    s = r["sensitivity_at_fp_per_scan"]
    assert set(s) == {str(x) for x in FROC_RATES}
    # the only FP (0.6) is below the nodule hit (0.95): sensitivity 0.5 at every rate >= 0 FPs
    assert all(v == pytest.approx(0.5) for v in s.values())
    assert r["cpm"] == pytest.approx(0.5)


def test_froc_trades_fps_for_sensitivity():
    scans = [ScanDetections([np.array([200.0 + n, 0, 0]) for n in range(4)] + [np.array([0.0, 0, 0])],
                            [0.9, 0.8, 0.7, 0.6, 0.5], [ref(0.0)])]
    s = froc(scans)["sensitivity_at_fp_per_scan"]
    assert s["2.0"] == 0.0 and s["4.0"] == 1.0 and s["8.0"] == 1.0


def test_dice():
    a = np.zeros((4, 4, 4), bool)
    b = a.copy()
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


@pytest.mark.shared_data
def test_lidc_contours_and_voc_boxes_read(shared_data):
    from training.evaluate import consensus_groups, parse_lidc_contours, parse_voc_boxes
    from pipelines.types import Volume

    folder = shared_data / "ct" / "lidc-idri-0001"
    import pydicom

    files = sorted(folder.glob("*.dcm"))
    zs = sorted(float(pydicom.dcmread(str(f), stop_before_pixels=True).ImagePositionPatient[2]) for f in files)
    ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True)
    ps = [float(v) for v in ds.PixelSpacing]
    vol = Volume(array=np.zeros((len(zs), 512, 512), np.int16), spacing_mm=(ps[1], ps[0], abs(zs[1] - zs[0])),
                 origin_mm=(float(ds.ImagePositionPatient[0]), float(ds.ImagePositionPatient[1]), zs[0]))
    nods, _ = parse_lidc_contours(folder / "annotations-lidc.xml", vol)
    groups = consensus_groups(nods)
    assert groups[0]["readers"] == 4  # the nodule the four readers outlined
    d = (6 * groups[0]["mask"].sum() * np.prod(vol.spacing_mm) / np.pi) ** (1 / 3)
    assert 15 < d < 40  # a large nodule (equivalent diameter in the slab, mm)
    boxes = parse_voc_boxes(shared_data / "ct" / "lung-pet-ct-dx-a0001" / "tumour-boxes")
    assert boxes and all(x1 > x0 and y1 > y0 for bs in boxes.values() for x0, y0, x1, y1 in bs)


def test_candidate_centre_is_the_fractional_centroid_not_the_rounded_voxel():
    """A 5 mm nodule on 2.5 mm slices spans two or three slices: its centre is scored where the mask's weight lies,
    not snapped to a slice (which moves it by up to 1.25 mm, half the nodule's radius)."""
    from pipelines.infer import Candidate
    from pipelines.types import Volume
    from training.evaluate import candidate_centres_mm

    vol = Volume(array=np.zeros((10, 10, 10), np.float32), spacing_mm=(1.0, 1.0, 2.5), origin_mm=(0.0, 0.0, 0.0),
                 direction=np.eye(3))
    c = Candidate(mask=np.ones((2, 1, 1), bool), offset=(4, 5, 5), confidence=0.9, mean_probability=0.9,
                  center_voxel=[5, 5, 4], volume_mm3=5.0, center_ijk=(5.0, 5.0, 4.5))
    (centre,) = candidate_centres_mm(vol, [c])
    assert centre[2] == pytest.approx(4.5 * 2.5)
    c.center_ijk = None  # made without one: the rounded voxel
    (centre,) = candidate_centres_mm(vol, [c])
    assert centre[2] == pytest.approx(4 * 2.5)
