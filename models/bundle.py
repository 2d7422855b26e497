"""Write a model card's network and weights as a MONAI bundle folder that ``BundleBackend`` loads.

Layout (MONAI bundle specification): ``configs/metadata.json`` (the input/output contract: HU window,
spacing, channels; plus ``preread.sha256`` of the weights), ``configs/inference.json`` (``network_def``),
``models/model.pt`` (state dict).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.registry import ModelSpec
from models.weights import load_state_dict, sha256_file

_TARGETS = {"unet": "UNet", "basicunet": "BasicUNet", "segresnet": "SegResNet"}


def write_bundle(spec: ModelSpec, folder: Path | str) -> Path:
    """Write ``spec``'s verified weights and network definition as a bundle in ``folder``."""
    root = Path(folder)
    state = load_state_dict(spec.weights.path(), spec.weights.sha256)
    (root / "configs").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir(parents=True, exist_ok=True)
    wpath = root / "models" / "model.pt"
    torch.save(state, wpath)
    meta = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json",
        "version": spec.version,
        "name": spec.name,
        "description": spec.description,
        "authors": "preread (trained on synthetic chest CT)",
        "copyright": "Apache-2.0",
        "intended_use": "Research and testing only. NOT FOR CLINICAL USE.",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                                 "spatial_shape": list(spec.input.patch_size), "dtype": "float32",
                                 "value_range": [0, 1], "is_patch_data": True,
                                 "hu_window": list(spec.input.hu_window), "spacing_mm": list(spec.input.spacing_mm)}},
            "outputs": {"pred": {"type": "probabilities", "format": "segmentation", "num_channels": 1,
                                 "spatial_shape": list(spec.input.patch_size), "dtype": "float32",
                                 "value_range": [0, 1], "channel_def": {"0": "nodule"}}},
        },
        "preread": {"sha256": sha256_file(wpath), "inference": spec.inference.model_dump(mode="json")},
    }
    (root / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    target = _TARGETS[spec.architecture.name.lower()]
    inference = {"network_def": {"_target_": target, **spec.architecture.params}}
    (root / "configs" / "inference.json").write_text(json.dumps(inference, indent=2) + "\n")
    return root
