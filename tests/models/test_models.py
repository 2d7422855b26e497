"""Registry, weights hash check, backends (torch, ONNX Runtime, MONAI bundle) and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from models.backends import BundleBackend, OnnxRuntimeBackend, TorchBackend, create_backend, load_network
from models.errors import ModelError
from models.export import export_onnx, export_torchscript
from models.networks import build_network
from models.registry import list_models, load_spec
from tests.models.conftest import PARAMS

CPU = torch.device("cpu")


def test_committed_cards_are_valid():
    names = list_models()
    assert "nodule-unet-s" in names
    spec = load_spec()  # the default card
    assert spec.not_for_clinical_use
    assert spec.inference.coarse_spacing_mm > spec.inference.fine_spacing_mm


def test_unknown_model_and_backend_are_clear(tiny_card):
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        load_spec("nope")
    with pytest.raises(ModelError, match="unknown backend"):
        create_backend(load_spec(str(tiny_card)), "tensorflow", CPU)
    with pytest.raises(ModelError, match="unknown architecture"):
        build_network("resnet50", {})


@pytest.mark.parametrize("key, value", [("second_pass_spacing_mm", -1.0), ("coarse_spacing_mm", 0.0),
                                        ("threshold", 1.5), ("overlap", 1.0)])
def test_impossible_inference_settings_are_refused_with_where(tmp_path, key, value):
    """A card whose inference block cannot be right (a spacing <= 0, a probability above 1) is refused when
    loaded, naming the field, instead of running with it."""
    from tests.models.conftest import write_card

    p = write_card(tmp_path)
    card = yaml.safe_load(p.read_text())
    card["inference"][key] = value
    p.write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match=f"invalid at inference.{key}"):
        load_spec(str(p))


def test_corrupt_weights_fail_with_hash_message(tiny_card):
    spec = load_spec(str(tiny_card))
    load_network(spec)  # intact: loads
    path = spec.weights.path()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256.*corrupt"):
        load_network(spec)
    path.unlink()
    with pytest.raises(ModelError, match="not found"):
        load_network(spec)


def test_weights_of_another_network_are_refused(tiny_card, tmp_path):
    spec = load_spec(str(tiny_card))
    other = build_network("unet", {**PARAMS, "channels": [8, 16, 32]})
    torch.save(other.state_dict(), spec.weights.path())
    spec.weights.sha256 = None
    with pytest.raises(ModelError, match="do not fit the network"):
        load_network(spec)


def test_torch_backend_outputs_probabilities(tiny_card):
    be = create_backend(load_spec(str(tiny_card)), "torch", CPU)
    assert (be.name, be.device, be.precision) == ("torch", "cpu", "fp32")  # no AMP on CPU
    y = be(torch.rand(2, 1, 16, 24, 32))
    assert y.shape == (2, 1, 16, 24, 32)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_onnx_matches_torch(tiny_card, tmp_path):
    net = load_network(load_spec(str(tiny_card)))
    onnx_path = tmp_path / "tiny.onnx"
    digest = export_onnx(net, onnx_path, example_size=(16, 16, 16))
    ort_be = OnnxRuntimeBackend(onnx_path, CPU, sha256=digest)
    assert ort_be.device == "CPUExecutionProvider"  # no GPU asked for on a CPU device
    torch_be = TorchBackend(net, CPU)
    x = torch.rand(1, 1, 24, 32, 40)  # another shape than the export example: spatial axes are dynamic
    diff = float((ort_be(x) - torch_be(x)).abs().max())
    assert diff < 1e-3


def test_torchscript_export_matches_torch(tiny_card, tmp_path):
    net = load_network(load_spec(str(tiny_card)))
    p = tmp_path / "tiny.ts"
    export_torchscript(net, p, example_size=(16, 16, 16))
    ts = torch.jit.load(str(p))
    x = torch.rand(1, 1, 16, 16, 16)
    assert float((ts(x) - TorchBackend(net, CPU)(x)).abs().max()) < 1e-5


def _make_bundle(root, net):
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    (root / "configs" / "metadata.json").write_text(json.dumps({
        "version": "0.0.1", "network_data_format": {
            "inputs": {"image": {"type": "image", "num_channels": 1, "spatial_shape": [16, 16, 16]}},
            "outputs": {"pred": {"type": "probabilities", "num_channels": 1}}}}))
    (root / "configs" / "inference.json").write_text(json.dumps({
        "network_def": {"_target_": "UNet", **PARAMS}}))


def test_monai_bundle_loads_and_predicts(tmp_path):
    torch.manual_seed(1)
    net = build_network("unet", PARAMS)
    _make_bundle(tmp_path / "bundle", net)
    be = BundleBackend(tmp_path / "bundle", CPU)
    x = torch.rand(1, 1, 16, 16, 16)
    y = be(x)
    assert be.name == "bundle" and y.shape == x.shape
    assert torch.allclose(y, torch.sigmoid(net.eval()(x)), atol=1e-6)  # the bundle's own weights were loaded


def test_bundle_missing_weights_is_clear(tmp_path):
    _make_bundle(tmp_path / "b", build_network("unet", PARAMS))
    (tmp_path / "b" / "models" / "model.pt").unlink()
    with pytest.raises(ModelError, match="lacks models/model.pt"):
        BundleBackend(tmp_path / "b", CPU)


def test_model_card_written_as_bundle_predicts_like_torch(tiny_card, tmp_path):
    from models.bundle import write_bundle

    spec = load_spec(str(tiny_card))
    folder = write_bundle(spec, tmp_path / "bundle")
    be = create_backend(spec, "bundle", CPU, bundle_dir=folder)
    x = torch.rand(1, 1, 16, 16, 16)
    assert be.name == "bundle"
    assert torch.allclose(be(x), TorchBackend(load_network(spec), CPU)(x), atol=1e-6)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["hu_window"] == [-1000, 400]
