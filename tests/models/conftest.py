"""A small model card with random weights in a temporary folder (no committed weights needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from models.networks import build_network
from models.weights import sha256_file

PARAMS = {"spatial_dims": 3, "in_channels": 1, "out_channels": 1, "channels": [4, 8, 16], "strides": [2, 2],
          "num_res_units": 1}


def write_card(tmp: Path, **over) -> Path:
    torch.manual_seed(0)
    net = build_network("unet", PARAMS)
    w = tmp / "tiny.pt"
    torch.save(net.state_dict(), w)
    card = {
        "name": "tiny", "version": "0.0.1", "architecture": {"name": "unet", "params": PARAMS},
        "weights": {"file": str(w), "sha256": sha256_file(w)},
        "input": {"hu_window": [-1000, 400], "spacing_mm": [1, 1, 1], "patch_size": [16, 16, 16]},
        "inference": {"coarse_spacing_mm": 2.0, "fine_spacing_mm": 1.0, "roi_size": [32, 32, 32], "overlap": 0.25,
                      "sw_batch_size": 2, "candidate_threshold": 0.0, "threshold": 0.5, "min_confidence": 0.5,
                      "lung_margin_mm": 4.0, "fine_margin_mm": 4.0, "min_volume_mm3": 1.0},
    }
    card.update(over)
    p = tmp / "tiny.yaml"
    p.write_text(yaml.safe_dump(card))
    return p


@pytest.fixture()
def tiny_card(tmp_path) -> Path:
    return write_card(tmp_path)
