"""Synthetic chest CT: determinism, DICOM/NIfTI round trip through ingest, truth versus the analytic shapes,
label maps versus truth, HU of the tissues, and the ``preread synth`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.errors import ConfigError
from training.synthetic import NoduleSpec, SynthConfig, make_study, write_study
from training.synthetic import nodules as nod

# Small studies keep the tests quick: 128 x 128 pixels, 40 slices through the mid-chest.
SMALL = dict(rows=128, cols=128, pixel_spacing_mm=(2.4, 2.8), slice_thickness_mm=(2.5,), n_slices=48,
             vessel_points_per_tree=200)


def small(**kw) -> SynthConfig:
    return SynthConfig.preset("fast", **{**SMALL, **kw})


@pytest.fixture(scope="module")
def study():
    cfg = small(kernel="B30f", ctdi_mgy=(6.0, 8.0), nodules=(NoduleSpec(composition="solid", shape="round", placement="central", diameter_mm=12.0),
                         NoduleSpec(composition="ground-glass", shape="oval", placement="juxtapleural",
                                    diameter_mm=14.0),
                         NoduleSpec(composition="part-solid", shape="lobulated", placement="juxtavascular",
                                    diameter_mm=16.0, solid_fraction=0.5)))
    return make_study(4242, cfg)


def test_deterministic_in_seed(study):
    again = make_study(4242, study.config)
    assert np.array_equal(again.volume.array, study.volume.array)
    assert np.array_equal(again.labels, study.labels)
    assert again.report == study.report
    assert json.dumps(again.truth, sort_keys=True) == json.dumps(study.truth, sort_keys=True)
    other = make_study(4243, study.config)
    assert not np.array_equal(other.volume.array[: study.volume.array.shape[0]], study.volume.array)
    assert other.truth["study_uid"] != study.truth["study_uid"]


def test_volume_contract(study):
    v = study.volume
    nk, nj, ni = v.array.shape
    assert v.array.dtype == np.int16
    assert (ni, nj, nk) == tuple(study.truth["shape_ijk"]) == (128, 128, 48)
    assert study.labels.shape == study.lung_labels.shape == study.lobe_labels.shape == v.array.shape
    assert study.labels.dtype == np.int16 and study.lung_labels.dtype == np.uint8
    assert v.instance_numbers == [nk - k for k in range(nk)]  # head first, as scanners number them
    assert len(set(v.sop_instance_uids)) == nk
    assert v.spacing_mm[2] == 2.5
    assert set(np.unique(study.lung_labels)) == {0, 1, 2}
    # the right lung (1) lies at smaller LPS x (patient's right) than the left lung (2)
    kk, jj, ii = np.nonzero(study.lung_labels == 1)
    kl, jl, il = np.nonzero(study.lung_labels == 2)
    assert ii.mean() < il.mean()
    assert set(np.unique(study.lobe_labels)) <= {0, 1, 2, 3, 4, 5}
    assert np.all(study.lobe_labels[study.lung_labels == 1] <= 3) and np.all(study.lobe_labels[study.lung_labels == 2] >= 4)
    json.dumps(study.truth)  # JSON-able


def test_truth_matches_labels_and_geometry(study):
    v = study.volume
    nods = study.truth["nodules"]
    assert [n["composition"] for n in nods] == ["solid", "ground-glass", "part-solid"]
    voxel_mm3 = float(np.prod(v.spacing_mm))
    for n in nods:
        mask = study.labels == n["label"]
        assert mask.any()
        i, j, k = n["center_voxel"]
        assert np.allclose(v.voxel_to_mm([i, j, k]), n["center_mm"], atol=max(v.spacing_mm) / 2 + 1e-6)
        assert n["instance_number"] == v.instance_numbers[k]
        # 50%-occupancy labels hold about the analytic volume (partial volume at 2.5 mm voxels)
        assert abs(mask.sum() * voxel_mm3 - n["volume_mm3"]) / n["volume_mm3"] < 0.3
        assert n["long_axis_mm"] >= n["short_axis_mm"] > 0
        assert n["mean_diameter_mm"] == pytest.approx((n["long_axis_mm"] + n["short_axis_mm"]) / 2, abs=0.011)
        assert n["max_3d_diameter_mm"] >= n["long_axis_mm"] - 0.3
        assert n["side"] == ("right" if study.lung_labels[k, j, i] == 1 else "left") or study.lung_labels[k, j, i] == 0
        assert n["lobe"] in {"RUL", "RML", "RLL"} if n["side"] == "right" else n["lobe"] in {"LUL", "LLL"}
    ps = nods[2]
    assert ps["solid_component_mm"] is not None and 0 < ps["solid_component_mm"] < ps["mean_diameter_mm"]


def test_nodule_hu_by_composition(study):
    a = study.volume.array
    med = {n["composition"]: float(np.median(a[study.labels == n["label"]])) for n in study.truth["nodules"]}
    assert -120 < med["solid"] < 120
    assert -800 < med["ground-glass"] < -250
    assert med["part-solid"] > med["ground-glass"] - 150


# ---- truth measurements against analytic shapes (one test per nodule type) ---------------------------

def _axis_aligned(axes, **kw):
    return nod.NoduleShape(center=np.array([10.0, -20.0, 30.0]), rot=np.eye(3), axes=np.asarray(axes, float), **kw)


def test_round_nodule_truth_is_the_sphere():
    m = nod.measure(_axis_aligned([4.0, 4.0, 4.0]))
    assert m["long_axis_mm"] == pytest.approx(8.0, abs=0.12)
    assert m["short_axis_mm"] == pytest.approx(8.0, abs=0.12)
    assert m["max_3d_diameter_mm"] == pytest.approx(8.0, abs=0.35)
    assert m["volume_mm3"] == pytest.approx(4 / 3 * np.pi * 64, rel=0.02)
    assert np.allclose(m["center_mm"], [10, -20, 30], atol=0.05)


def test_oval_nodule_truth_is_the_ellipsoid():
    a, b, c = 7.0, 4.0, 3.0  # long axis along x, short along y: measured in the axial plane z = centre
    m = nod.measure(_axis_aligned([a, b, c]))
    assert m["long_axis_mm"] == pytest.approx(2 * a, abs=0.15)
    assert m["short_axis_mm"] == pytest.approx(2 * b, abs=0.15)
    assert m["mean_diameter_mm"] == pytest.approx(a + b, abs=0.15)
    assert m["volume_mm3"] == pytest.approx(4 / 3 * np.pi * a * b * c, rel=0.02)
    assert m["axial_z_mm"] == pytest.approx(30.0, abs=0.3)
    # tilted out of the axial plane: the axial long axis is shorter than the 3-D one
    rot = np.array([[np.cos(0.6), 0, -np.sin(0.6)], [0, 1, 0], [np.sin(0.6), 0, np.cos(0.6)]])
    t = nod.measure(nod.NoduleShape(center=np.zeros(3), rot=rot, axes=np.array([a, b, c])))
    assert t["long_axis_mm"] < 2 * a - 0.5
    assert t["max_3d_diameter_mm"] == pytest.approx(2 * a, abs=0.5)


def _brute(shape: nod.NoduleShape, z: float, h: float = 0.04):
    """Independent check: long axis (max pairwise distance) and the volume by Monte Carlo."""
    e = shape.extent()
    g = np.arange(-e, e, h) + h / 2
    Y, X = np.meshgrid(g + shape.center[1], g + shape.center[0], indexing="ij")
    m = shape.inside(np.stack([X, Y, np.full_like(X, z)], -1))
    pts = np.stack([X[m], Y[m]], -1)
    from scipy.spatial import ConvexHull
    hull = pts[ConvexHull(pts).vertices]
    L = np.sqrt(((hull[:, None] - hull[None]) ** 2).sum(-1)).max() + h
    rng = np.random.default_rng(0)
    q = shape.center + rng.uniform(-e, e, size=(400_000, 3))
    vol = shape.inside(q).mean() * (2 * e) ** 3
    return L, vol


@pytest.mark.parametrize("kind", ["lobulated", "spiculated"])
def test_irregular_nodule_truth_matches_brute_force(kind):
    rng = np.random.default_rng(7)
    shape = nod.make_shape(rng, kind, 12.0, np.array([0.0, 0.0, 0.0]), "solid")
    m = nod.measure(shape)
    L, vol = _brute(shape, m["axial_z_mm"])
    assert m["long_axis_mm"] == pytest.approx(L, abs=0.2)
    assert m["volume_mm3"] == pytest.approx(vol, rel=0.03)
    assert m["short_axis_mm"] <= m["long_axis_mm"]


def test_part_solid_core_truth():
    shape = _axis_aligned([6.0, 6.0, 6.0], core_center=np.zeros(3), core_axes=np.array([2.5, 2.0, 2.0]))
    core = nod.measure(shape.core_shape())
    assert core["mean_diameter_mm"] == pytest.approx(2.5 + 2.0, abs=0.12)
    outer = nod.measure(shape)
    assert outer["mean_diameter_mm"] == pytest.approx(12.0, abs=0.15)


@pytest.mark.parametrize("composition", ["solid", "ground-glass", "calcified", "part-solid"])
def test_rendered_partial_volume_matches_the_truth_volume(composition):
    """Occupancy summed over voxels (any spacing) equals the analytic volume, for every composition."""
    rng = np.random.default_rng(3)
    shape = nod.make_shape(rng, "lobulated", 10.0, np.array([1.3, -2.1, 0.7]), composition)
    m = nod.measure(shape)
    spacing = np.array([0.7, 0.7, 2.5])
    sl, occ, core = nod.render_occupancy(shape, np.array([-30.0, -30.0, -30.0]), spacing, (25, 90, 90), s_xy=4, s_z=10)
    assert occ.sum() * spacing.prod() == pytest.approx(m["volume_mm3"], rel=0.03)
    assert (core is None) == (composition != "part-solid")


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="report_relation"):
        SynthConfig(report_relation="sometimes")
    with pytest.raises(ConfigError, match="preset"):
        SynthConfig.preset("huge")
    with pytest.raises(ConfigError, match="kernel"):
        SynthConfig(kernel="B99x")


# ---- files: DICOM and NIfTI through ingest -----------------------------------------------------------

@pytest.fixture(scope="module")
def written(study, tmp_path_factory):
    return write_study(study, tmp_path_factory.mktemp("synth") / "study")


def test_written_files(written, study):
    names = {p.name for p in written.iterdir()}
    assert {"dicom", "report.txt", "truth.json", "image.nii.gz", "labels.nii.gz", "lungs.nii.gz"} <= names
    assert (written / "report.txt").read_text() == study.report
    assert json.loads((written / "truth.json").read_text()) == json.loads(json.dumps(study.truth))


def test_dicom_is_ct_image_storage(written, study):
    import pydicom
    files = sorted((written / "dicom").iterdir())
    assert len(files) == study.volume.array.shape[0]
    ds = pydicom.dcmread(files[0])
    assert ds.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.StudyInstanceUID == study.truth["study_uid"] and ds.SeriesInstanceUID == study.truth["series_uid"]
    assert ds.InstanceNumber == 1 and float(ds.ImagePositionPatient[2]) == pytest.approx(
        study.volume.voxel_to_mm([0, 0, study.volume.array.shape[0] - 1])[2], abs=1e-3)
    assert ds.RescaleType == "HU" and float(ds.RescaleIntercept) == -1024
    assert ds.Modality == "CT" and ds.PatientPosition == "HFS"


def test_dicom_round_trips_through_ingest(written, study):
    from pipelines.ingest import load_study
    res = load_study(written / "dicom")
    v = res.volume
    s = study.volume
    assert np.array_equal(v.array, s.array)
    assert np.allclose(v.spacing_mm, s.spacing_mm, atol=1e-4)
    assert np.allclose(v.origin_mm, s.origin_mm, atol=1e-3)
    assert np.allclose(v.direction, s.direction)
    assert v.instance_numbers == s.instance_numbers
    assert v.sop_instance_uids == s.sop_instance_uids
    assert v.study_uid == s.study_uid and v.series_uid == s.series_uid
    assert not v.warnings
    res.close()


def test_nifti_round_trips_through_ingest(written, study):
    from pipelines.ingest import read_volume
    v = read_volume(written / "image.nii.gz")
    assert np.array_equal(v.array, study.volume.array)
    assert np.allclose(v.spacing_mm, study.volume.spacing_mm, atol=1e-4)
    assert np.allclose(v.origin_mm, study.volume.origin_mm, atol=1e-3)
    assert np.allclose(v.direction, np.eye(3), atol=1e-6)
    lab = read_volume(written / "labels.nii.gz")
    assert np.array_equal(lab.array.astype(np.int16), study.labels)


# ---- tissue HU ------------------------------------------------------------------------------------------

def test_tissue_hu_within_real_ct_ranges(study):
    from training.synthetic.hu_stats import tissue_stats
    st = tissue_stats(study.volume.array, lung_mask=(study.lung_labels > 0) & (study.labels == 0))
    assert -1030 <= st["air"]["median"] <= -960
    assert -900 <= st["lung"]["median"] <= -780
    assert -130 <= st["fat"]["mode"] <= -60
    assert 10 <= st["soft_tissue"]["mode"] <= 80
    assert st["bone"]["p99"] >= 500


# ---- CLI ------------------------------------------------------------------------------------------------

def test_cli_synth_writes_studies(tmp_path, monkeypatch):
    from serving.cli import main
    import training.synthetic.config as sc
    real = sc.SynthConfig.preset.__func__
    monkeypatch.setattr(sc.SynthConfig, "preset", classmethod(lambda cls, name, **kw: real(cls, name, **{**SMALL, **kw})))
    out = tmp_path / "out"
    code = main(["synth", "--out", str(out), "--n", "2", "--seed", "5", "--relation", "negative", "--no-dicom",
                 "--json", str(tmp_path / "s.json")])
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert [r["seed"] for r in summary["studies"]] == [5, 6]
    for r in summary["studies"]:
        truth = json.loads((out / r["study"] / "truth.json").read_text())
        assert truth["report"]["relation"] == "negative"
        assert (out / r["study"] / "labels.nii.gz").is_file()
    assert main(["synth", "--out", str(out), "--preset", "nope"]) == 2
    assert main(["synth", "--out", str(out), "--relation", "sometimes"]) == 2


@pytest.mark.shared_data
def test_tissue_hu_inside_the_real_series_ranges(study, shared_data):
    """The same statistics on the real chest series span the synthetic values (with a small tolerance)."""
    from pipelines.ingest import load_study
    from training.synthetic.hu_stats import tissue_stats
    real = []
    for rel in ("lung-pet-ct-dx-a0001/series-3-soft-kernel", "lidc-idri-0001", "lidc-idri-0003"):
        res = load_study(shared_data / "ct" / rel)
        real.append(tissue_stats(res.volume.array))
        res.close()
    syn = tissue_stats(study.volume.array)
    for tissue, stat, tol in (("air", "median", 30), ("lung", "median", 40), ("fat", "mode", 30),
                              ("soft_tissue", "mode", 25)):
        vals = [r[tissue][stat] for r in real]
        assert min(vals) - tol <= syn[tissue][stat] <= max(vals) + tol, (tissue, syn[tissue][stat], vals)


@pytest.mark.parametrize("diameters", [(30.0, 40.0), (3.0, 5.0)])
def test_relation_outside_the_diameter_range_draws_the_nearest_allowed_size(diameters):
    """An under-sized report needs a 7.5-18 mm solid nodule; a config whose sizes do not reach that range gets the
    nearest size it allows (this raised 'high - low < 0' for a masses-only config)."""
    st = make_study(7, small(nodule_diameter_mm=diameters, n_nodules=(1, 1), p_no_nodule=0.0,
                             report_relation="undersized"))
    solid = [n for n in st.truth["nodules"] if n["composition"] == "solid"]
    assert solid and all(diameters[0] <= n["nominal_diameter_mm"] <= diameters[1] for n in solid)
    assert st.truth["report"]["requested_relation"] == "undersized" and st.report
