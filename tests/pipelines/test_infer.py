"""detect_nodules: geometry of candidates, lung restriction, model info, errors; with the committed model
on a synthetic study, the nodules are found."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.registry import load_spec
from pipelines.errors import ModelError, PreprocessError
from pipelines.infer import detect_nodules
from pipelines.types import Volume
from tests.models.conftest import write_card


def phantom(shape=(40, 48, 48), spacing=(0.8, 0.8, 1.25)):
    """Air outside, soft tissue body, lung box at -850 HU with one 8 mm solid sphere; lung labels 1/2."""
    k, j, i = np.mgrid[:shape[0], :shape[1], :shape[2]]
    hu = np.full(shape, -1000, np.int16)
    hu[2:-2, 2:-2, 2:-2] = 40
    lung = np.zeros(shape, np.uint8)
    lung[6:-6, 8:-8, 8:24] = 1
    lung[6:-6, 8:-8, 26:-8] = 2
    hu[lung > 0] = -850
    c = np.array([20, 24, 16])
    r = np.sqrt(((k - c[0]) * spacing[2]) ** 2 + ((j - c[1]) * spacing[1]) ** 2 + ((i - c[2]) * spacing[0]) ** 2)
    hu[r <= 4.0] = 30
    return Volume(array=hu, spacing_mm=spacing), lung


def test_candidates_are_crops_inside_the_lung_box(tmp_path):
    card = write_card(tmp_path)
    vol, lung = phantom()
    det = detect_nodules(vol, lung, model=str(card), device=torch.device("cpu"), return_probabilities=True)
    assert det.model_info.name == "tiny" and det.model_info.backend == "torch" and det.model_info.device == "cpu"
    assert det.probabilities is not None and det.probabilities.shape == vol.array.shape
    assert det.probabilities.dtype == np.float16
    (k0, k1), (j0, j1), (i0, i1) = det.lung_box
    assert k0 >= 0 and k1 <= vol.array.shape[0]
    for c in det.candidates:
        full = c.full_mask(vol.array.shape)
        assert full.sum() == c.mask.sum() > 0
        i, j, k = c.center_voxel
        assert k0 <= k < k1 and j0 <= j < j1 and i0 <= i < i1  # within the grown lung box
        assert 0.0 <= c.confidence <= 1.0
        # the fractional centre (probability-weighted) lies within the mask's voxel extent, near the rounded one
        lo = np.argwhere(c.mask).min(axis=0)[::-1] + np.asarray(c.offset[::-1])
        hi = np.argwhere(c.mask).max(axis=0)[::-1] + np.asarray(c.offset[::-1])
        assert c.center_ijk is not None and np.all(lo <= c.center_ijk) and np.all(np.asarray(c.center_ijk) <= hi)
        assert np.all(np.abs(np.asarray(c.center_ijk) - np.asarray(c.center_voxel)) <= 1.0)
    assert "total" in det.timings_s


def test_empty_lung_mask_gives_no_candidates(tmp_path):
    card = write_card(tmp_path)
    vol, lung = phantom()
    det = detect_nodules(vol, np.zeros_like(lung), model=str(card))
    assert det.candidates == []


def test_bad_inputs_are_typed_errors(tmp_path):
    card = write_card(tmp_path)
    vol, lung = phantom()
    with pytest.raises(PreprocessError, match="lung mask shape"):
        detect_nodules(vol, lung[:-1], model=str(card))
    with pytest.raises(ModelError, match="unknown model"):
        detect_nodules(vol, lung, model="no-such-model")
    with pytest.raises(ModelError, match="unknown backend"):
        detect_nodules(vol, lung, model=str(card), backend="caffe")


@pytest.fixture(scope="module")
def small_study():
    from training.synthetic import SynthConfig, make_study
    from training.synthetic.config import NoduleSpec

    cfg = SynthConfig.preset("fast", n_slices=48, nodules=(
        NoduleSpec(diameter_mm=10.0, composition="solid", placement="central"),))
    return make_study(424242, cfg)


def test_committed_model_finds_and_segments_a_synthetic_nodule(small_study):
    """The default model card's weights (hash-checked) find the nodule; its mask overlaps the truth."""
    s = small_study
    det = detect_nodules(s.volume, s.lung_labels, device=torch.device("cpu"))
    assert det.model_info.name == load_spec().name and det.model_info.device == "cpu"
    truth = s.labels > 0
    (nod,) = s.truth["nodules"]
    hits = [c for c in det.candidates
            if np.linalg.norm((np.array(c.center_voxel) - nod["center_voxel"]) * s.volume.spacing_mm)
            <= nod["mean_diameter_mm"] / 2]
    assert hits, f"nodule at {nod['center_voxel']} not found among {[c.center_voxel for c in det.candidates]}"
    best = hits[0].full_mask(truth.shape)
    dice = 2 * (best & truth).sum() / (best.sum() + truth.sum())
    assert dice > 0.6
    # ranked among the most confident (false positives exist: see the model card's metrics)
    assert [n for n, c in enumerate(det.candidates) if c is hits[0]][0] < 3


def test_onnx_backend_gives_the_same_candidates(small_study):
    """The committed ONNX export (``preread export --format onnx``, hash in the card) finds the same
    candidates as torch, with nearly the same confidence."""
    s = small_study
    ref = detect_nodules(s.volume, s.lung_labels)
    det = detect_nodules(s.volume, s.lung_labels, backend="onnxruntime")
    assert det.model_info.backend == "onnxruntime" and det.model_info.device == "CPUExecutionProvider"
    assert len(det.candidates) == len(ref.candidates)
    for a, b in zip(det.candidates, ref.candidates):
        assert a.center_voxel == b.center_voxel
        assert abs(a.confidence - b.confidence) < 1e-3


def test_lung_mask_growth_is_the_same_cube_dilation_as_scipy():
    """The coarse pass keeps probabilities within lung_margin_mm of the lungs: the separable max pool grows
    the mask exactly as a (2r+1)³ cube dilation would, also at the volume's borders."""
    import numpy as np
    import torch
    from scipy import ndimage

    from pipelines.infer import _dilate_cube

    rng = np.random.default_rng(3)
    m = rng.random((23, 31, 17)) > 0.995
    m[0, 0, 0] = m[-1, -1, -1] = True
    for r in (1, 4):
        want = ndimage.binary_dilation(m, structure=np.ones((2 * r + 1,) * 3, bool))
        assert np.array_equal(_dilate_cube(torch.from_numpy(m), r).numpy(), want)


def test_second_pass_adds_a_second_sweep_and_still_finds_the_nodule(small_study, tmp_path):
    """A card with ``second_pass_spacing_mm`` sweeps the lung box a second time at that spacing (timed apart);
    the nodule is still found and segmented."""
    import yaml

    from pipelines.paths import CONFIGS_DIR

    card = yaml.safe_load((CONFIGS_DIR / "models" / f"{load_spec().name}.yaml").read_text())
    card["inference"]["second_pass_spacing_mm"] = 1.0
    card["default"] = False
    p = tmp_path / "second-pass.yaml"
    p.write_text(yaml.safe_dump(card))
    s = small_study
    det = detect_nodules(s.volume, s.lung_labels, model=str(p), device=torch.device("cpu"), return_probabilities=True)
    assert "second_pass" in det.timings_s
    (nod,) = s.truth["nodules"]
    truth = s.labels > 0
    hits = [c for c in det.candidates if (c.full_mask(truth.shape) & truth).sum() > 0.5 * truth.sum()]
    assert hits
    assert float(det.probabilities[truth].max()) >= 0.5


def test_tta_flips_average_the_mirrored_predictions():
    """With ``tta_flips`` the probability is the mean of the plain prediction and the prediction of each mirrored
    input mirrored back: a network that favours one side of the image is evened out along that axis only."""
    from pipelines.infer import _predict

    spec = load_spec()
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 1, 16)

    def lopsided(x):  # "probability" rising along W whatever the image
        return x * ramp

    x = torch.rand(1, 1, 16, 16, 16)
    plain = _predict(lopsided, x, spec, torch.device("cpu"))
    assert torch.allclose(plain, x * ramp)
    mirrored = spec.model_copy(update={"inference": spec.inference.model_copy(update={"tta_flips": [2]})})
    both = _predict(lopsided, x, mirrored, torch.device("cpu"))
    assert torch.allclose(both, x * 0.5 * (ramp + torch.flip(ramp, (4,))))  # flat: 0.5 everywhere
    other_axis = spec.model_copy(update={"inference": spec.inference.model_copy(update={"tta_flips": [0]})})
    assert torch.allclose(_predict(lopsided, x, other_axis, torch.device("cpu")), x * ramp)  # ramp along W kept


def test_small_components_grow_to_their_hysteresis_region():
    """A small nodule on thick slices: the network's peak covers one voxel (dropped as under min_volume_mm3); with
    ``grow_threshold`` the candidate is its whole region of probability >= grow_threshold, once, centred on it; a
    component large enough on its own is left as it is."""
    from pipelines.infer import _components

    prob = np.zeros((10, 20, 20), np.float32)
    prob[4:7, 4:8, 4:8] = 0.5  # a faint 3x4x4 region ...
    prob[5, 5, 5] = prob[5, 6, 6] = 0.95  # ... with two separate one-voxel peaks
    prob[2:8, 12:18, 12:18] = 0.9  # a large confident component
    prob[1, 11:19, 11:19] = 0.5  # and a faint rim on top of it
    box = ((0, 10), (0, 20), (0, 20))
    vox = 12.0  # mm3: 1.75 x 1.75 x 4 mm
    plain = _components(prob, box, 0.75, 0.5, 20.0, vox)
    assert [int(c.mask.sum()) for c in plain] == [216]  # the peaks are dropped as too small
    grown = _components(prob, box, 0.75, 0.5, 20.0, vox, grow_threshold=0.4, grow_below_mm3=60.0)
    sizes = sorted(int(c.mask.sum()) for c in grown)
    assert sizes == [48, 216]  # the faint region once (both peaks lead to it); the large one without its rim
    small = next(c for c in grown if int(c.mask.sum()) == 48)
    assert small.confidence == pytest.approx(0.95)
    assert small.offset == (4, 4, 4) and small.center_voxel == [6, 6, 5]  # [i, j, k], rounded centroid
