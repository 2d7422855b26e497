"""Lung mask on a hand-built chest phantom (known truth) and on the real series in ../shared/data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import ConfigError, PreprocessError
from pipelines.lungmask import LOBE_CODES, load_config, segment_lungs
from pipelines.types import Volume

SP = (1.5, 1.5, 2.5)  # (sx, sy, sz) mm


def dice(a, b) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def make_phantom(seed: int = 0) -> tuple[Volume, dict[str, np.ndarray]]:
    """A chest phantom in LPS (i → patient left, j → posterior, k → superior) with its truth masks.

    Body ellipse, two ellipsoid lungs with vessels, trachea from the top slice to a carina and two main
    bronchi, a 12 mm nodule against the right lateral chest wall, bowel gas under the diaphragm, and a
    patient table behind the back separated by an air gap.
    """
    rng = np.random.default_rng(seed)
    K, J, I = 64, 150, 170
    sx, sy, sz = SP
    origin = (-(I - 1) * sx / 2, -(J - 1) * sy / 2, 0.0)
    k, j, i = np.meshgrid(np.arange(K), np.arange(J), np.arange(I), indexing="ij", sparse=True)
    x, y, z = origin[0] + i * sx, origin[1] + j * sy, origin[2] + k * sz
    vol = np.full((K, J, I), -1000.0, np.float32)
    body = (x / 115.0) ** 2 + (y / 85.0) ** 2 <= 1.0
    vol[np.broadcast_to(body, vol.shape)] = 40.0
    table = (y > 95) & (y < 105) & (np.abs(x) < 110)
    vol[np.broadcast_to(table, vol.shape)] = 300.0
    lungs = {}
    zc, cz = 95.0, 65.0
    for name, xc in (("right", -50.0), ("left", 50.0)):  # patient's right is LPS -x
        m = ((x - xc) / 38.0) ** 2 + ((y + 5.0) / 58.0) ** 2 + ((z - zc) / cz) ** 2 <= 1.0
        lungs[name] = m
        vol[m] = -850.0
    # vessels: thin tubes along z inside each lung
    for xc in (-60.0, -40.0, 40.0, 62.0):
        for yc in (-20.0, 10.0):
            v = ((x - xc) ** 2 + (y - yc) ** 2 <= 2.0 ** 2) & (lungs["right"] | lungs["left"])
            vol[v] = 40.0
    # trachea (x=0, y=-20) from the top down to the carina at z=110, then main bronchi to the hila
    trachea = ((x ** 2 + (y + 20.0) ** 2) <= 8.0 ** 2) & (z >= 110.0)
    bronchi = np.zeros(vol.shape, bool)
    for sgn in (-1, 1):
        for t in np.linspace(0, 1, 40):  # straight tube from the carina to the medial lung surface
            px, pz = sgn * 22.0 * t, 110.0 - 15.0 * t
            bronchi |= ((x - px) ** 2 + (y + 20.0) ** 2 + (z - pz) ** 2) <= 5.5 ** 2
    bronchi &= ~(lungs["right"] | lungs["left"])
    vol[np.broadcast_to(trachea, vol.shape)] = -1000.0
    vol[bronchi] = -1000.0
    # juxtapleural nodule on the right lateral wall (12 mm, 2 mm of it in the chest wall)
    nod_c = (-84.0, -5.0, 95.0)
    nodule = ((x - nod_c[0]) ** 2 + (y - nod_c[1]) ** 2 + (z - nod_c[2]) ** 2) <= 6.0 ** 2
    vol[nodule] = 30.0
    # bowel gas under the left diaphragm
    gas = ((x - 40.0) ** 2 + (y + 10.0) ** 2 + (z - 15.0) ** 2) <= 14.0 ** 2
    vol[gas] = -1000.0
    vol += rng.normal(0, 20, vol.shape).astype(np.float32)
    volume = Volume(array=np.round(vol).astype(np.int16), spacing_mm=SP, origin_mm=origin,
                    series_uid="1.2.3", study_uid="1.2")
    truth = {"right": lungs["right"], "left": lungs["left"], "trachea": np.broadcast_to(trachea, vol.shape) & body,
             "bronchi": bronchi, "nodule_in_lung": nodule & (lungs["right"]), "gas": gas,
             "table": np.broadcast_to(table, vol.shape)}
    return volume, truth


@pytest.fixture(scope="module")
def phantom():
    vol, truth = make_phantom()
    return vol, truth, segment_lungs(vol)


def test_phantom_sides_and_dice(phantom):
    vol, truth, seg = phantom
    assert seg.labels.shape == vol.array.shape and seg.labels.dtype == np.uint8
    assert set(np.unique(seg.labels)) == {0, 1, 2}
    assert dice(seg.labels == 1, truth["right"]) > 0.92  # label 1 = patient's right = LPS -x
    assert dice(seg.labels == 2, truth["left"]) > 0.92


def test_phantom_airways_gas_and_table_excluded(phantom):
    _, truth, seg = phantom
    assert seg.mask[truth["trachea"]].mean() < 0.02
    assert seg.mask[truth["bronchi"]].mean() < 0.10
    assert not seg.mask[truth["gas"]].any()
    assert not seg.mask[truth["table"]].any()


def test_phantom_juxtapleural_nodule_stays_inside(phantom):
    """The pleural-based nodule is kept: its centre, and its voxels deeper than the mask's working grid
    (2.5 mm, here 2 voxels of 1.5 mm) from the pleura."""
    vol, truth, seg = phantom
    from scipy import ndimage as ndi

    deep = truth["nodule_in_lung"] & ndi.binary_erosion(truth["right"], structure=np.ones((1, 5, 5), bool))
    assert (seg.labels[deep] == 1).mean() > 0.97
    assert (seg.labels[truth["nodule_in_lung"]] == 1).mean() > 0.7  # the outermost column is chest-wall-like
    i, j, k = np.round(vol.mm_to_voxel((-84.0, -5.0, 95.0))).astype(int)
    assert seg.labels[k, j, i] == 1


def test_mask_with_margin_takes_the_whole_pleural_nodule(phantom):
    _, truth, seg = phantom
    grown = seg.mask_with_margin(3.0)
    assert grown[seg.mask].all()
    assert grown[truth["nodule_in_lung"]].all()
    assert not grown[truth["table"]].any()
    from scipy import ndimage as ndi

    d = ndi.distance_transform_edt(~seg.mask, sampling=(1e4, SP[1], SP[0]))  # in-plane distance, mm
    assert d[grown].max() <= 3.0 * np.sqrt(2) + 1e-6  # a rim of at most the margin (square corners)


def test_broad_based_pleural_mass_stays_inside():
    """A 30 mm pleural-based mass is wider than the closing; the lateral hull fill keeps it."""
    vol, truth = make_phantom(seed=3)
    a = vol.array.copy()
    k, j, i = np.meshgrid(*(np.arange(n) for n in a.shape), indexing="ij", sparse=True)
    x, y, z = (vol.origin_mm[0] + i * SP[0], vol.origin_mm[1] + j * SP[1], vol.origin_mm[2] + k * SP[2])
    mass = (x + 75.0) ** 2 + (y + 5.0) ** 2 + (z - 80.0) ** 2 <= 15.0 ** 2
    a[mass] = 35
    seg = segment_lungs(vol.with_array(a))
    assert (seg.labels[mass & truth["right"]] == 1).mean() > 0.95
    assert dice(seg.labels == 1, truth["right"]) > 0.95


def test_phantom_approximate_lobes(phantom):
    vol, _, seg = phantom
    assert seg.lobes is not None and seg.lobes_approximate
    right = seg.labels == 1
    assert set(np.unique(seg.lobes[right])) == {LOBE_CODES["RUL"], LOBE_CODES["RML"], LOBE_CODES["RLL"]}
    assert set(np.unique(seg.lobes[seg.labels == 2])) == {LOBE_CODES["LUL"], LOBE_CODES["LLL"]}
    assert not seg.lobes[seg.labels == 0].any()
    # upper lobe above lower lobe (k grows superiorly here), lower lobe posterior to the middle lobe
    kc = {n: np.argwhere(seg.lobes == c).mean(0) for n, c in LOBE_CODES.items()}
    assert kc["RUL"][0] > kc["RLL"][0] and kc["LUL"][0] > kc["LLL"][0]
    assert kc["RLL"][1] > kc["RML"][1]
    side, lobe = seg.location_at((20, 60, 30))  # i=20 is far patient-right
    assert side == "right" and lobe in ("RUL", "RML", "RLL")


def test_flipped_axes_keep_anatomical_sides(phantom):
    """Same anatomy stored with i running to the patient's right and k running inferiorly."""
    vol, truth, seg = phantom
    arr = vol.array[::-1, :, ::-1].copy()
    K, _, I = vol.array.shape
    direction = np.diag([-1.0, 1.0, -1.0])
    origin = vol.voxel_to_mm((I - 1, 0, K - 1))
    flipped = Volume(array=arr, spacing_mm=vol.spacing_mm, origin_mm=tuple(origin), direction=direction)
    seg2 = segment_lungs(flipped)
    assert dice(seg2.labels[::-1, :, ::-1] == 1, truth["right"]) > 0.92
    assert dice(seg2.labels[::-1, :, ::-1] == 2, truth["left"]) > 0.92
    assert seg2.lobes is not None


def test_partial_slab_without_trachea_top():
    vol, truth = make_phantom(seed=1)
    k0, k1 = 30, 40  # 10 slices through the mid lungs, below the carina
    slab = Volume(array=vol.array[k0:k1].copy(), spacing_mm=vol.spacing_mm,
                  origin_mm=tuple(vol.voxel_to_mm((0, 0, k0))))
    seg = segment_lungs(slab)
    assert dice(seg.labels == 1, truth["right"][k0:k1]) > 0.92
    assert dice(seg.labels == 2, truth["left"][k0:k1]) > 0.92
    assert seg.lobes is None and any("lobes not assigned" in w for w in seg.warnings)


def test_touching_lungs_are_split():
    """Lungs that meet at an anterior junction line still come out as two lungs."""
    vol, truth = make_phantom(seed=2)
    a = vol.array.copy()
    x = vol.origin_mm[0] + np.arange(a.shape[2]) * SP[0]
    y = vol.origin_mm[1] + np.arange(a.shape[1]) * SP[1]
    z = vol.origin_mm[2] + np.arange(a.shape[0]) * SP[2]
    bridge = (np.abs(x)[None, None, :] < 14) & ((y[None, :, None] > -55) & (y[None, :, None] < -45)) \
        & ((z[:, None, None] > 80) & (z[:, None, None] < 100))
    a[bridge] = -850
    seg = segment_lungs(vol.with_array(a))
    assert dice(seg.labels == 1, truth["right"]) > 0.9
    assert dice(seg.labels == 2, truth["left"]) > 0.9


def test_no_lungs_is_a_clear_error():
    a = np.full((8, 64, 64), -1000, np.int16)
    a[:, 10:54, 10:54] = 40  # a block of soft tissue in air
    with pytest.raises(PreprocessError, match="no lung"):
        segment_lungs(Volume(array=a, spacing_mm=(1.0, 1.0, 2.0)))
    with pytest.raises(PreprocessError, match="air-density"):
        segment_lungs(Volume(array=np.full((4, 32, 32), 40, np.int16), spacing_mm=(1.0, 1.0, 2.0)))


def test_config_is_validated(tmp_path):
    assert load_config().lung_hu < -300
    with pytest.raises(ConfigError, match="invalid"):
        segment_lungs(make_phantom()[0], config={"lung_hu": -300, "no_such_key": 1})
    bad = tmp_path / "lm.yaml"
    bad.write_text("closing_radius_mm: -3\n")
    with pytest.raises(ConfigError):
        load_config(bad)


# ----------------------------------------------------------------------------------- real series


def read_series(path: Path) -> Volume:
    """DICOM folder or NIfTI → Volume with SimpleITK (stands in until pipelines.ingest is merged)."""
    import SimpleITK as sitk

    if path.is_dir():
        r = sitk.ImageSeriesReader()
        r.SetFileNames(r.GetGDCMSeriesFileNames(str(path), r.GetGDCMSeriesIDs(str(path))[0]))
        img = r.Execute()
    else:
        img = sitk.ReadImage(str(path))
    return Volume(array=sitk.GetArrayFromImage(img).astype(np.int16), spacing_mm=img.GetSpacing(),
                  origin_mm=img.GetOrigin(), direction=np.array(img.GetDirection()).reshape(3, 3))


def centre_x(vol: Volume, m: np.ndarray) -> float:
    return float(vol.voxel_to_mm(np.argwhere(m).mean(0)[::-1])[0])


@pytest.mark.parametrize("name", ["lidc-idri-0001", "lidc-idri-0002", "lidc-idri-0003",
                                  "lung-pet-ct-dx-a0001/series-2-lung-kernel", "lung-pet-ct-dx-a0002"])
def test_real_series_two_lungs_on_the_right_sides(shared_data, name):
    vol = read_series(shared_data / "ct" / name)
    seg = segment_lungs(vol)
    assert seg.volume_ml(1) > 100 and seg.volume_ml(2) > 100
    assert centre_x(vol, seg.labels == 1) < centre_x(vol, seg.labels == 2)  # right lung at smaller LPS x
    # nothing in the bottom rows of the image, where the table lies (posterior, j grows posteriorly here)
    assert not seg.mask[:, int(0.85 * vol.array.shape[1]):, :].any()


def test_lidc_0001_nodule_inside_mask(shared_data):
    folder = shared_data / "ct" / "lidc-idri-0001"
    vol = read_series(folder)
    seg = segment_lungs(vol)
    zs = vol.origin_mm[2] + np.arange(vol.array.shape[0]) * vol.spacing_mm[2]
    root = ET.parse(folder / "annotations-lidc.xml").getroot()
    ns = {"n": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {"n": ""}
    pref = "n:" if ns["n"] else ""
    hits, total = 0, 0
    for nodule in root.iter(f"{{{ns['n']}}}unblindedReadNodule" if ns["n"] else "unblindedReadNodule"):
        for roi in nodule.findall(f"{pref}roi", ns):
            z = float(roi.find(f"{pref}imageZposition", ns).text)
            k = int(np.argmin(np.abs(zs - z)))
            if abs(zs[k] - z) > 0.5 * vol.spacing_mm[2]:
                continue
            pts = [(int(e.find(f"{pref}xCoord", ns).text), int(e.find(f"{pref}yCoord", ns).text))
                   for e in roi.findall(f"{pref}edgeMap", ns)]
            if len(pts) < 3:
                continue
            for xi, yj in pts:
                total += 1
                hits += bool(seg.mask[k, yj, xi])
    assert total > 20  # the readers' contours of the large nodule lie in this slab
    assert hits / total > 0.9  # its outline lies inside the lung mask


def test_totalsegmentator_lung_bases_dice(shared_data):
    ts = shared_data / "ct" / "totalsegmentator-examples"
    vol = read_series(ts / "example_ct_sm.nii.gz")
    ref = read_series(ts / "example_seg.nii.gz").array
    seg = segment_lungs(vol)
    # TotalSegmentator v2 classes: 10 LUL, 11 LLL, 12 RUL, 13 RML, 14 RLL
    assert dice(seg.labels == 1, np.isin(ref, (12, 13, 14))) > 0.9
    assert dice(seg.labels == 2, np.isin(ref, (10, 11))) > 0.9
    assert not seg.mask[np.isin(ref, (5, 6, 18, 19, 20))].mean() > 0.01  # liver, stomach, bowel stay out


def test_synthetic_study_lungs():
    synthetic = pytest.importorskip("training.synthetic")
    if not hasattr(synthetic, "make_study"):
        pytest.skip("training.synthetic.make_study not available yet")
    study = synthetic.make_study(9100, synthetic.SynthConfig.preset("fast"))
    seg = segment_lungs(study.volume)
    truth = np.asarray(study.lung_labels)
    assert dice(seg.labels == 1, truth == 1) > 0.95
    assert dice(seg.labels == 2, truth == 2) > 0.95
    nodules = np.asarray(study.labels)
    for n in np.unique(nodules[nodules > 0]):  # every nodule, juxtapleural ones included, lies in the mask
        assert (seg.labels[nodules == n] > 0).mean() > 0.9
