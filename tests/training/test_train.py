"""A smoke training run on tiny synthetic studies: it trains, logs, checkpoints, resumes and publishes
weights whose hash the card records (so the hash check then passes on them and fails on a corrupt copy)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from models.backends import load_network
from models.errors import ModelError
from models.registry import load_spec
from tests.models.conftest import PARAMS


@pytest.fixture()
def tiny_setup(tmp_path, monkeypatch):
    """A configs/ folder with a tiny model card and a training config on small synthetic studies."""
    from training.synthetic import SynthConfig

    cfgs = tmp_path / "configs"
    (cfgs / "models").mkdir(parents=True)
    (cfgs / "training").mkdir()
    card = {
        "name": "tiny", "version": "0.0.1", "architecture": {"name": "unet", "params": PARAMS},
        "weights": {"file": str(tmp_path / "tiny.pt"), "sha256": None},
        "input": {"hu_window": [-1000, 400], "spacing_mm": [1, 1, 1], "patch_size": [16, 16, 16]},
        "inference": {"coarse_spacing_mm": 2.0, "fine_spacing_mm": 1.0, "roi_size": [32, 32, 32],
                      "candidate_threshold": 0.3, "threshold": 0.5, "min_confidence": 0.5, "lung_margin_mm": 4,
                      "fine_margin_mm": 4, "min_volume_mm3": 1},
    }
    (cfgs / "models" / "tiny.yaml").write_text(yaml.safe_dump(card))
    train = {"model": "tiny", "patch_size": [16, 16, 16], "spacing_range_mm": [1.5, 2.5],
             "hu_window": [-1000, 400], "batch_size": 2, "steps": 4, "log_every": 2, "val_every": 2,
             "data": {"preset": "tiny-test", "train_seeds": [1, 2], "val_seeds": [3, 4], "val_patches_per_study": 2}}
    (cfgs / "training" / "tiny.yaml").write_text(yaml.safe_dump(train))
    monkeypatch.setenv("PREREAD_CONFIGS_DIR", str(cfgs))
    real_preset = SynthConfig.preset
    monkeypatch.setattr(SynthConfig, "preset", classmethod(
        lambda cls, name, **kw: real_preset("fast", rows=64, cols=64, n_slices=24, **kw) if name == "tiny-test"
        else real_preset(name, **kw)))
    return tmp_path, cfgs


def test_smoke_train_logs_checkpoints_resumes_and_publishes(tiny_setup):
    from training.train import load_config, train

    tmp, cfgs = tiny_setup
    cfg = load_config(str(cfgs / "training" / "tiny.yaml"))
    run = tmp / "run"
    s1 = train(cfg, run, device=torch.device("cpu"), max_steps=2, write_weights=False)
    assert s1["steps"] == 2 and (run / "checkpoint.pt").is_file()
    s2 = train(cfg, run, device=torch.device("cpu"))  # resumes at step 2, runs to 4, publishes
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines]
    assert steps == sorted(steps) and steps[-1] == 4 and 2 in steps  # no step ran twice
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in lines if "loss" in r)
    assert any("val_dice" in r for r in lines)
    spec = load_spec(str(cfgs / "models" / "tiny.yaml"))
    assert spec.weights.sha256 == s2["sha256"]
    load_network(spec)  # the published weights pass the hash check
    p = spec.weights.path()
    p.write_bytes(p.read_bytes()[:-7] + b"garbage")
    with pytest.raises(ModelError, match="sha256"):
        load_network(spec)


def test_per_patch_dice_counts_a_missed_small_nodule_as_much_as_a_found_large_one():
    """With ``dice_per_patch`` a 2-voxel-wide nodule the network misses costs half the Dice term even beside a
    perfectly segmented large nodule (a batch Dice hardly notices it); patches without nodule add only
    cross-entropy."""
    from monai.losses import DiceCELoss

    from training.train import PerPatchDiceCE

    y = torch.zeros(3, 1, 16, 16, 16)
    y[0, 0, 2:14, 2:14, 2:14] = 1  # large nodule
    y[1, 0, 7:9, 7:9, 7:9] = 1  # small nodule
    logits = torch.full_like(y, -12.0)
    logits[0][y[0] > 0] = 12.0  # the large one found, the small one missed, nothing on the empty patch
    per_patch = PerPatchDiceCE(lambda_dice=1.0, lambda_ce=0.0)(logits, y)
    batch = DiceCELoss(sigmoid=True, batch=True, lambda_dice=1.0, lambda_ce=0.0)(logits, y)
    assert per_patch.item() == pytest.approx(0.5, abs=0.01)
    assert batch.item() < 0.01
    # a sliver below dice_min_voxels (the small nodule has 8 voxels) gets no Dice term
    assert PerPatchDiceCE(lambda_dice=1.0, lambda_ce=0.0, min_voxels=9)(logits, y).item() < 0.01
    # an empty patch alone: no Dice term, only cross-entropy (zero for a confident right answer)
    assert PerPatchDiceCE()(logits[2:], y[2:]).item() < 1e-4
    # a false positive on an empty patch is paid through cross-entropy
    fp = logits[2:].clone()
    fp[0, 0, 4:8, 4:8, 4:8] = 12.0
    assert PerPatchDiceCE()(fp, y[2:]).item() > 0.1
