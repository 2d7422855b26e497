"""Lesion measurement: sizes against exact shapes, geometry, composition, location, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.measure_shapes import CTSettings, Shape, rasterise
from pipelines.errors import MeasureError
from pipelines.measure import (
    LesionMeasurement, load_measurement_config, measure_labels, measure_mask, round_fleischner, round_lungrads,
)
from pipelines.types import AIFinding, Volume


def rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1.0]])


def rot_x(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[1.0, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def ellipsoid(semi, rotation=None, center=(10.0, -20.0, -100.0)) -> Shape:
    return Shape(np.asarray(center, float), np.eye(3) if rotation is None else rotation, np.asarray(semi, float))


def ct(shape: Shape, inplane=0.7, slice_mm=1.25, seed=0, angle=0.0, **ct_kw):
    return rasterise(shape, inplane, slice_mm, np.random.default_rng(seed), CTSettings(**ct_kw), in_plane_angle=angle)


# ----------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("inplane,slice_mm", [(0.5, 0.625), (0.7, 1.25), (1.0, 1.0)])
def test_rotated_ellipse_axes_within_0_3_mm(inplane, slice_mm):
    # semi-axes 6 x 3.5 x 4 mm, turned 35 degrees in-plane: the largest axial section is 12 x 7 mm
    shape = ellipsoid((6.0, 3.5, 4.0), rot_z(35))
    vol, mask, _ = ct(shape, inplane, slice_mm, angle=0.4)
    m = measure_mask(vol, mask)
    assert m.partial_volume_refined
    assert m.long_axis_mm == pytest.approx(12.0, abs=0.3)
    assert m.short_axis_mm == pytest.approx(7.0, abs=0.3)
    assert m.mean_diameter_mm == pytest.approx(9.5, abs=0.3)
    assert m.volume_mm3 == pytest.approx(4 / 3 * math.pi * 6 * 3.5 * 4, rel=0.03)
    assert m.max_3d_diameter_mm == pytest.approx(12.0, abs=0.4)
    assert m.sphere_equivalent_diameter_mm == pytest.approx((6 * m.volume_mm3 / math.pi) ** (1 / 3), abs=1e-2)


def test_boundary_beats_voxel_centres_by_about_a_voxel():
    """Voxel-centre distances underestimate by about one voxel; the sub-voxel boundary does not."""
    from benchmarks.measurement_accuracy import voxel_centre_caliper

    ours, naive = [], []
    for seed in range(6):
        vol, mask, _ = ct(ellipsoid((5.0, 5.0, 5.0)), 1.0, 1.0, seed=seed, angle=0.3 * seed)
        ours.append(measure_mask(vol, mask).long_axis_mm)
        naive.append(voxel_centre_caliper(vol, mask)[0])
    assert abs(np.mean(ours) - 10.0) <= 0.15
    assert np.max(np.abs(np.array(ours) - 10.0)) <= 0.3
    assert np.mean(naive) <= 10.0 - 0.1  # voxel centres lose part of a voxel even on the diagonals


def test_mask_only_mode_is_close_too():
    shape = ellipsoid((5.0, 3.0, 4.0), rot_z(20))
    vol, mask, _ = ct(shape, 0.7, 1.0)
    m = measure_mask(vol, mask, use_image=False)
    assert not m.partial_volume_refined
    assert m.long_axis_mm == pytest.approx(10.0, abs=0.35)
    assert m.short_axis_mm == pytest.approx(6.0, abs=0.35)
    assert m.volume_mm3 == pytest.approx(4 / 3 * math.pi * 60, rel=0.05)


def test_same_lesion_same_size_whatever_the_image_axes():
    shape = ellipsoid((5.5, 3.0, 3.5), rot_z(-25))
    sizes = []
    for angle in (0.0, 0.7, 2.2):
        vol, mask, _ = ct(shape, 0.6, 1.0, angle=angle, seed=3)
        m = measure_mask(vol, mask)
        sizes.append((m.long_axis_mm, m.short_axis_mm))
        assert np.allclose(m.center_mm, shape.center_mm, atol=0.25)
    sizes = np.array(sizes)
    assert np.ptp(sizes[:, 0]) < 0.25 and np.ptp(sizes[:, 1]) < 0.25


def test_anisotropic_pixels_are_measured_in_mm():
    # rectangular pixels 0.5 x 0.9 mm: a circle must still read as a circle
    k, j, i = np.mgrid[0:12, 0:40, 0:60]
    sp = (0.5, 0.9, 1.0)
    x, y, z = (i - 29.6) * sp[0], (j - 19.8) * sp[1], (k - 6) * sp[2]
    mask = x ** 2 + y ** 2 + z ** 2 <= 25
    vol = Volume(array=np.where(mask, 40, -850).astype(np.int16), spacing_mm=sp)
    m = measure_mask(vol, mask, use_image=False)
    assert m.long_axis_mm == pytest.approx(10.0, abs=0.45)
    assert m.short_axis_mm == pytest.approx(10.0, abs=0.45)


def test_endpoints_are_consistent_and_perpendicular():
    vol, mask, _ = ct(ellipsoid((6.0, 3.0, 3.0), rot_z(50)), 0.7, 1.25, angle=1.0)
    m = measure_mask(vol, mask)
    L = np.array(m.long_axis_endpoints_mm)
    S = np.array(m.short_axis_endpoints_mm)
    assert np.linalg.norm(L[1] - L[0]) == pytest.approx(m.long_axis_mm, abs=0.01)
    assert np.linalg.norm(S[1] - S[0]) == pytest.approx(m.short_axis_mm, abs=0.01)
    u, v = (L[1] - L[0]) / m.long_axis_mm, (S[1] - S[0]) / m.short_axis_mm
    assert abs(u @ v) < 1e-3  # endpoints are rounded to 1 micrometre
    assert np.allclose(vol.voxel_to_mm(np.array(m.long_axis_endpoints_voxel)), L, atol=0.01)
    assert np.allclose(np.array(m.long_axis_endpoints_voxel)[:, 2], m.axial_slice_k)  # drawn on the measured slice


def test_multiplanar_coronal_sees_the_craniocaudal_extent():
    shape = ellipsoid((4.0, 4.0, 8.0))  # an 8 mm round section, 16 mm tall
    vol, mask, _ = ct(shape, 0.7, 1.0)
    ax = measure_mask(vol, mask)
    co = measure_mask(vol, mask, plane="coronal")
    sa = measure_mask(vol, mask, plane="sagittal")
    assert ax.long_axis_mm == pytest.approx(8.0, abs=0.3)
    assert co.plane == "coronal" and co.long_axis_mm == pytest.approx(16.0, abs=0.5)
    assert sa.long_axis_mm == pytest.approx(16.0, abs=0.5)
    assert abs(np.ptp(np.array(co.long_axis_endpoints_mm)[:, 1])) < 1e-6  # on one coronal plane (fixed y)


def test_oblique_acquisition_is_resampled_to_a_true_axial_plane():
    shape = ellipsoid((5.0, 3.0, 3.0), rot_z(10))
    vol, mask, _ = ct(shape, 0.7, 0.7)
    # the same voxels, declared as acquired with slices tilted 30 degrees about x
    d = rot_x(30)
    centre_idx = vol.mm_to_voxel(shape.center_mm)
    origin = shape.center_mm - (d @ np.diag(vol.spacing_mm)) @ centre_idx
    tilted = Volume(array=vol.array, spacing_mm=vol.spacing_mm, origin_mm=tuple(origin), direction=d)
    m = measure_mask(tilted, mask)
    # body frame is now tilted too: the axial section through the centre of the rotated ellipsoid
    truth = Shape(shape.center_mm, d @ shape.rotation, shape.semi_axes_mm).largest_axial_section()
    assert m.long_axis_mm == pytest.approx(truth[1], abs=0.4)
    assert m.short_axis_mm == pytest.approx(truth[2], abs=0.4)
    L = np.array(m.long_axis_endpoints_mm)
    assert abs(L[0, 2] - L[1, 2]) < 1e-6  # measured on a true axial plane


# ----------------------------------------------------------------------------------------- rounding, uncertainty
def test_guideline_rounding():
    assert round_fleischner(5.5) == 6 and round_fleischner(5.49) == 5 and round_fleischner(8.5) == 9
    assert round_lungrads(6.25) == 6.3 and round_lungrads(7.95) == 8.0 and round_lungrads(5.94) == 5.9


def test_uncertainty_grows_with_slice_thickness_and_pixel_size():
    shape = ellipsoid((4.0, 4.0, 4.0))
    thin = measure_mask(*ct(shape, 0.5, 0.625)[:2])
    thick = measure_mask(*ct(shape, 0.5, 5.0)[:2])
    coarse = measure_mask(*ct(shape, 1.0, 0.625)[:2], use_image=False)
    fine = measure_mask(*ct(shape, 0.5, 0.625)[:2], use_image=False)
    assert thick.uncertainty_mm > 3 * thin.uncertainty_mm
    assert coarse.uncertainty_mm > fine.uncertainty_mm
    assert thin.uncertainty_mm < 0.3


# ----------------------------------------------------------------------------------------- composition
@pytest.mark.parametrize("lesion_hu,expected", [(40.0, "solid"), (-600.0, "ground-glass"), (450.0, "calcified")])
def test_composition_from_hu(lesion_hu, expected):
    vol, mask, _ = ct(ellipsoid((5.0, 5.0, 5.0)), 0.7, 1.0, lesion_hu=lesion_hu)
    m = measure_mask(vol, mask)
    assert m.composition == expected
    assert m.solid_component_mm is None


def test_part_solid_reports_its_solid_component():
    outer = ellipsoid((7.0, 7.0, 7.0))
    vol, mask, _ = ct(outer, 0.7, 1.0, lesion_hu=-600.0)
    # paint the solid core into the ground-glass image on the same grid
    k, j, i = np.indices(vol.array.shape)
    p = vol.voxel_to_mm(np.column_stack([i.ravel(), j.ravel(), k.ravel()])).reshape(*vol.array.shape, 3)
    core = ((p - outer.center_mm) ** 2).sum(-1) <= 9.0
    vol.array[core] = 40.0
    m = measure_mask(vol, mask)
    assert m.composition == "part-solid"
    assert m.solid_component_mm == pytest.approx(6.0, abs=1.0)
    assert m.mean_diameter_mm == pytest.approx(14.0, abs=0.4)


def test_a_large_solid_part_makes_a_large_ground_glass_nodule_part_solid_whatever_its_share():
    # 26 mm ground-glass nodule with a 6 mm solid part: about 1.3 % of its volume, under the 5 % share rule
    outer = ellipsoid((13.0, 13.0, 13.0))
    vol, mask, _ = ct(outer, 0.7, 1.0, lesion_hu=-600.0)
    k, j, i = np.indices(vol.array.shape)
    p = vol.voxel_to_mm(np.column_stack([i.ravel(), j.ravel(), k.ravel()])).reshape(*vol.array.shape, 3)
    vol.array[((p - outer.center_mm) ** 2).sum(-1) <= 9.0] = 40.0
    cfg = load_measurement_config()
    m = measure_mask(vol, mask, config=cfg)
    assert m.composition == "part-solid" and m.solid_component_mm == pytest.approx(6.0, abs=1.0)
    share_only = cfg.model_copy(update={"composition": cfg.composition.model_copy(
        update={"solid_component_decides_mm": None})})
    assert measure_mask(vol, mask, config=share_only).composition == "ground-glass"
    # a small solid speck (a vessel in cross-section) does not: the nodule stays ground-glass
    vol2, mask2, _ = ct(outer, 0.7, 1.0, lesion_hu=-600.0)
    vol2.array[((p - outer.center_mm) ** 2).sum(-1) <= 2.0 ** 2] = 40.0
    assert measure_mask(vol2, mask2, config=cfg).composition == "ground-glass"


# ----------------------------------------------------------------------------------------- location
def test_side_lobe_instance_number_and_centre():
    shape = ellipsoid((4.0, 4.0, 4.0), center=(80.0, 10.0, -150.0))  # +x = patient left
    vol, mask, _ = ct(shape, 0.7, 1.25)
    vol.instance_numbers = [100 + k for k in range(vol.array.shape[0])]
    m = measure_mask(vol, mask)
    assert m.location.side == "left" and m.location.lobe is None
    assert m.instance_number == 100 + m.axial_slice_k
    assert np.allclose(m.center_mm, shape.center_mm, atol=0.2)
    assert np.allclose(vol.voxel_to_mm(m.center_voxel), shape.center_mm, atol=1.0)
    lobes = np.zeros(vol.array.shape, dtype=np.uint8)
    lobes[:, :, :] = 3  # the lesion sits in RLL per the lobe model
    lobes[mask] = 0  # lobe masks usually leave the nodule out
    m2 = measure_mask(vol, mask, lobe_labels=lobes)
    assert m2.location.lobe == "RLL" and m2.location.side == "right"
    # right/left lung labels (1 right, 2 left, as pipelines.lungmask gives) decide the side
    lungs = np.where(mask, 0, 2).astype(np.uint8)
    assert measure_mask(vol, mask, lung_labels=lungs).location.side == "left"
    lungs[lungs == 2] = 1
    lungs[0, 0, 0] = 2  # the map has a left lung, elsewhere
    assert measure_mask(vol, mask, lung_labels=lungs).location.side == "right"
    # a lobe that contradicts the lung label is dropped, with a warning
    m4 = measure_mask(vol, mask, lung_labels=np.where(mask, 0, 2).astype(np.uint8), lobe_labels=lobes)
    assert m4.location.side == "left" and m4.location.lobe is None and m4.warnings
    # a binary lung mask sets the midline: lungs only at x below the lesion put it on the left
    k, j, i = np.indices(vol.array.shape)
    x = vol.voxel_to_mm(np.column_stack([i.ravel(), j.ravel(), k.ravel()]))[:, 0].reshape(vol.array.shape)
    m5 = measure_mask(vol, mask, lung_labels=(x < shape.center_mm[0] - 3).astype(np.uint8))
    assert m5.location.side == "left"
    m6 = measure_mask(vol, mask, lung_labels=(x > shape.center_mm[0] + 3).astype(np.uint8))
    assert m6.location.side == "right"


def test_to_ai_finding_carries_the_contract_fields():
    vol, mask, _ = ct(ellipsoid((4.0, 3.0, 3.0)), 0.7, 1.25)
    m = measure_mask(vol, mask)
    f = m.to_ai_finding("n1", 0.87)
    assert isinstance(f, AIFinding)
    d = f.model_dump(mode="json")
    for key in ("center_mm", "center_voxel", "instance_number", "long_axis_mm", "short_axis_mm", "mean_diameter_mm",
                "max_3d_diameter_mm", "volume_mm3", "uncertainty_mm", "composition", "solid_component_mm",
                "location"):
        assert key in d
    assert d["confidence"] == 0.87 and d["long_axis_mm"] == m.long_axis_mm
    assert d["long_axis_endpoints_mm"] == m.long_axis_endpoints_mm
    assert LesionMeasurement.model_validate_json(m.model_dump_json()) == m


# ----------------------------------------------------------------------------------------- labels, components
def _two_blobs():
    k, j, i = np.mgrid[0:20, 0:50, 0:50]
    a = (i - 12) ** 2 + (j - 12) ** 2 + (k - 10) ** 2 <= 16
    b = (i - 35) ** 2 + (j - 35) ** 2 + (k - 10) ** 2 <= 25
    vol = Volume(array=np.where(a | b, 40, -850).astype(np.int16), spacing_mm=(0.8, 0.8, 1.0))
    return vol, a, b


def test_measure_labels_components_and_label_values():
    vol, a, b = _two_blobs()
    ms = measure_labels(vol, a | b)
    assert len(ms) == 2
    # radius 4 and 5 voxels by voxel centre at 0.8 mm: the boundary lies half a voxel further out
    assert sorted(round(m.long_axis_mm, 1) for m in ms) == pytest.approx([7.2, 8.8], abs=0.3)
    ms255 = measure_labels(vol, (a | b).astype(np.uint8) * 255)
    assert len(ms255) == 2
    lab = np.zeros(a.shape, np.uint8)
    lab[a], lab[b] = 4, 9
    ml = measure_labels(vol, lab)
    assert [m.label for m in ml] == [4, 9]
    assert ml[1].long_axis_mm > ml[0].long_axis_mm


def test_connectivity_decides_whether_diagonal_voxels_join():
    arr = np.zeros((5, 10, 10), dtype=bool)
    arr[2, 3:5, 3:5] = True
    arr[2, 5:7, 5:7] = True  # touches the first only at a corner (edge in 3-D)
    vol = Volume(array=np.zeros(arr.shape, np.int16), spacing_mm=(1.0, 1.0, 1.0))
    assert len(measure_labels(vol, arr, connectivity=26)) == 1
    assert len(measure_labels(vol, arr, connectivity=6)) == 2


# ----------------------------------------------------------------------------------------- bad input
def test_bad_masks_raise_clear_errors():
    vol, a, _ = _two_blobs()
    with pytest.raises(MeasureError, match="empty"):
        measure_mask(vol, np.zeros_like(a))
    with pytest.raises(MeasureError, match="whole image"):
        measure_mask(vol, np.ones_like(a))
    with pytest.raises(MeasureError, match="shape"):
        measure_mask(vol, a[:, :, :-1])
    with pytest.raises(MeasureError, match="not binary"):
        measure_mask(vol, a.astype(np.uint8) * 2)
    with pytest.raises(MeasureError, match="not binary"):
        measure_mask(vol, a * 0.3)
    with pytest.raises(MeasureError, match="plane"):
        measure_mask(vol, a, plane="oblique")
    with pytest.raises(MeasureError, match="non-integer"):
        measure_labels(vol, a * 0.5)
    with pytest.raises(MeasureError, match="empty"):
        measure_labels(vol, np.zeros(a.shape, np.uint8))
    with pytest.raises(MeasureError, match="connectivity"):
        measure_labels(vol, a, connectivity=8)


def test_lesion_at_the_image_edge_is_flagged():
    arr = np.zeros((10, 20, 20), dtype=bool)
    arr[4:7, 0:4, 8:12] = True
    vol = Volume(array=np.zeros(arr.shape, np.int16), spacing_mm=(1.0, 1.0, 1.0))
    m = measure_mask(vol, arr)
    assert any("edge" in w for w in m.warnings)


def test_config_is_typed_and_cited():
    cfg = load_measurement_config()
    assert cfg.composition.solid_min_hu < 0 < cfg.composition.calcified_min_hu
    assert cfg.uncertainty.coverage_k > 0
