"""Edge growth (pipelines.refine): a nodule outlined by the network inside its edge, a solid one short of its
half-maximum border or a subsolid one by its dense centre, is grown to its edge; a vessel touching a ground-glass
rim and the chest wall are not taken in."""

from __future__ import annotations

import numpy as np
import pytest

from models.registry import EdgeGrowthSpec, load_spec
from pipelines.infer import Candidate
from pipelines.refine import grow_to_edge, refine_candidates

SPACING = (0.7, 0.7, 1.25)  # (x, y, z) mm
SHAPE = (40, 64, 64)  # (k, j, i)
CENTRE = np.array([20, 32, 32])


def radius_mm(centre=CENTRE):
    k, j, i = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    return np.sqrt(((k - centre[0]) * SPACING[2]) ** 2 + ((j - centre[1]) * SPACING[1]) ** 2
                   + ((i - centre[2]) * SPACING[0]) ** 2)


def lung_with(nodule_hu: float, r_nodule: float = 5.0, seed: int = 0):
    """Lung at -850 HU with noise, one sphere of ``nodule_hu``; returns (hu, truth mask)."""
    rng = np.random.default_rng(seed)
    r = radius_mm()
    hu = -850.0 + rng.normal(0, 20, SHAPE)
    truth = r <= r_nodule
    hu[truth] = nodule_hu + rng.normal(0, 20, int(truth.sum()))
    return hu.astype(np.float32), truth


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def on_grid(mask, offset):
    out = np.zeros(SHAPE, bool)
    out[offset[0]:offset[0] + mask.shape[0], offset[1]:offset[1] + mask.shape[1],
        offset[2]:offset[2] + mask.shape[2]] = mask
    return out


def crop(full):
    sl = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(full))
    return full[sl], tuple(s.start for s in sl)


@pytest.fixture(scope="module")
def spec() -> EdgeGrowthSpec:
    edge = load_spec(None).inference.edge_growth
    assert edge is not None, "the default model card grows masks to the nodule's edge"
    return edge


def test_a_ground_glass_nodule_outlined_by_its_centre_is_grown_to_its_edge(spec):
    hu, truth = lung_with(-600.0)
    small, off = crop(radius_mm() <= 3.0)  # what the network gives: the denser centre
    assert dice(on_grid(small, off), truth) < 0.5
    grown, goff, why = grow_to_edge(small, off, hu, SPACING, spec)
    assert why == "grown-subsolid"
    assert dice(on_grid(grown, goff), truth) > 0.9
    assert not (on_grid(grown, goff) & (radius_mm() > 6.5)).any()  # no further than the edge, whatever the reach


def blurred_solid(r_nodule: float = 5.0):
    """A solid nodule (30 HU) with a scanner-like blurred border (Gaussian PSF, 0.8 mm) and noise."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    truth = radius_mm() <= r_nodule
    hu = np.where(truth, 30.0, -850.0)
    hu = ndimage.gaussian_filter(hu, 0.8 / np.asarray(SPACING[::-1])) + rng.normal(0, 20, SHAPE)
    return hu.astype(np.float32), truth


def test_a_solid_nodule_cut_short_of_its_border_is_grown_to_the_half_maximum_edge(spec):
    hu, truth = blurred_solid()
    small, off = crop(radius_mm() <= 3.5)  # the network's mask: 1.5 mm inside the border
    grown, goff, why = grow_to_edge(small, off, hu, SPACING, spec)
    assert why == "grown-solid"
    g = on_grid(grown, goff)
    assert dice(on_grid(small, off), truth) < 0.6 < 0.9 < dice(g, truth)
    assert not (g & (radius_mm() > 6.0)).any()  # the blurred tail beyond the half-maximum is not taken


def test_a_solid_nodule_already_at_its_edge_hardly_changes(spec):
    hu, truth = blurred_solid()
    grown, goff, why = grow_to_edge(*crop(truth), hu, SPACING, spec)
    g = on_grid(grown, goff)
    assert dice(g, truth) > 0.95
    assert g.sum() <= 1.1 * truth.sum()


def test_a_kind_the_card_leaves_off_is_not_grown(spec):
    hu, truth = blurred_solid()
    small, off = crop(radius_mm() <= 3.5)
    grown, goff, why = grow_to_edge(small, off, hu, SPACING, spec.model_copy(update={"solid_edge_fraction": None}))
    assert why == "off" and goff == off and np.array_equal(grown, small)


def test_a_vessel_touching_the_rim_is_not_taken_in(spec):
    hu, truth = lung_with(-600.0)
    k, j, i = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    vessel = np.hypot((j - 32) * SPACING[1], (k - 20) * SPACING[2]) <= 2.5
    vessel &= (i - 32) * SPACING[0] > 3.0  # a 5 mm vessel leaving the nodule to one side, inside the reach
    hu[vessel] = 40.0
    small, off = crop(radius_mm() <= 3.0)
    grown, goff, why = grow_to_edge(small, off, hu, SPACING, spec)
    assert why == "solid-rim"  # growing would take in a piece of the vessel: the network's mask is kept
    assert goff == off and np.array_equal(grown, small)
    loose = spec.model_copy(update={"subsolid_max_solid_fraction": 1.0})
    g, go, _ = grow_to_edge(small, off, hu, SPACING, loose)
    assert (on_grid(g, go) & vessel).any()  # what the check prevents


def test_growth_stays_inside_the_lung_mask(spec):
    hu, truth = lung_with(-600.0)
    lung = np.ones(SHAPE, np.uint8)
    lung[:, :, 34:] = 0  # the pleura cuts the nodule at i = 34
    small, off = crop((radius_mm() <= 3.0) & (lung > 0))
    grown, goff, why = grow_to_edge(small, off, hu, SPACING, spec, lung_labels=lung)
    assert why == "grown-subsolid"
    g = on_grid(grown, goff)
    assert not (g & (lung == 0)).any()
    assert dice(g, truth & (lung > 0)) > 0.85


def test_refine_changes_the_mask_and_volume_not_the_detection(spec):
    hu, truth = lung_with(-600.0)
    small, off = crop(radius_mm() <= 3.0)
    vox = float(np.prod(SPACING))
    c = Candidate(mask=small, offset=off, confidence=0.8, mean_probability=0.9, center_voxel=[32, 32, 20],
                  volume_mm3=float(small.sum()) * vox, center_ijk=(32.0, 32.0, 20.0))
    refine_candidates([c], hu, SPACING, spec)
    assert c.confidence == 0.8 and c.center_ijk == (32.0, 32.0, 20.0) and c.center_voxel == [32, 32, 20]
    assert c.volume_mm3 == pytest.approx(float(c.mask.sum()) * vox)
    assert c.volume_mm3 == pytest.approx(4 / 3 * np.pi * 5.0 ** 3, rel=0.2)  # the 5 mm-radius nodule, not the 3 mm centre


def test_a_card_with_a_reversed_background_shell_is_refused(spec):
    bad = spec.model_dump() | {"shell_mm": [9.0, 4.0]}
    with pytest.raises(ValueError, match="shell_mm must be"):
        EdgeGrowthSpec(**bad)
