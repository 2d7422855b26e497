"""Export a network to ONNX (dynamic batch and spatial axes) and TorchScript.

Both exports wrap the network in :class:`models.backends.ProbabilityNet`, so every backend returns the
same quantity (nodule probability). ONNX: input ``image`` [B,1,D,H,W] float32 → output ``prob``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from models.backends import ProbabilityNet
from models.errors import ModelError
from models.weights import sha256_file

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")


def export_onnx(net: torch.nn.Module, path: Path | str, *, example_size: tuple[int, int, int] = (32, 32, 32),
                opset: int = 18) -> str:
    """Write ``net`` (CPU, fp32) as one self-contained ONNX file; returns its sha256.

    Spatial axes and batch are dynamic; the example size must be a multiple of the network's divisor.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = ProbabilityNet(net).to("cpu").eval()
    x = torch.zeros(1, 1, *example_size, dtype=torch.float32)
    batch, d, h, w = (torch.export.Dim(n, min=1, max=4096) for n in ("batch", "d", "h", "w"))
    try:
        torch.onnx.export(
            module, (x,), str(out), input_names=["image"], output_names=["prob"], opset_version=opset,
            dynamo=True, external_data=False, optimize=True,
            dynamic_shapes={"x": {0: batch, 2: d, 3: h, 4: w}},
        )
    except Exception as err:  # noqa: BLE001 - surface exporter failures as one typed error
        raise ModelError(f"ONNX export failed: {' '.join(str(err).split())[:400]}") from err
    digest = sha256_file(out)
    log.info("ONNX written to %s (sha256 %s)", out, digest)
    return digest


def export_torchscript(net: torch.nn.Module, path: Path | str, *,
                       example_size: tuple[int, int, int] = (32, 32, 32)) -> str:
    """Write ``net`` as a traced TorchScript file (probability output); returns its sha256."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    module = ProbabilityNet(net).to("cpu").eval()
    x = torch.zeros(1, 1, *example_size, dtype=torch.float32)
    with torch.no_grad():
        traced = torch.jit.trace(module, x, check_trace=False)
    traced.save(str(out))
    digest = sha256_file(out)
    log.info("TorchScript written to %s (sha256 %s)", out, digest)
    return digest
