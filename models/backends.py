"""Inference backends behind one interface: a callable batch → nodule probability.

Every backend maps a float32 tensor ``[B, 1, D, H, W]`` (preprocessed CT, see the model card) to the
nodule probability ``[B, 1, D, H, W]`` in [0, 1], on the input's device, and reports what really ran:

* ``TorchBackend``: a ``torch.nn.Module`` on an injected device; AMP (fp16 autocast) only on CUDA;
  ``torch.compile`` on request.
* ``OnnxRuntimeBackend``: an ONNX file (``models.export.export_onnx``) through onnxruntime-gpu; CUDA and
  TensorRT providers are asked for only when the injected device is CUDA; ``device`` is the provider that
  the session really uses (``session.get_providers()[0]``).
* ``BundleBackend``: a MONAI bundle folder (``configs/metadata.json``, ``configs/inference.json`` with a
  ``network_def``, ``models/model.pt`` state dict), run through ``TorchBackend``.

Nothing here chooses a device: callers pass one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from models.errors import ModelError
from models.networks import build_network
from models.registry import REPO_ROOT, ModelSpec
from models.weights import load_into, load_state_dict, verify_file

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "bundle")


class ProbabilityNet(torch.nn.Module):
    """Wraps a segmentation network so it outputs the nodule probability (1 channel).

    One output channel: sigmoid; two or more: softmax and channel 1 (foreground).
    """

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x)
        if isinstance(y, (list, tuple)):  # deep-supervision heads: the first is full resolution
            y = y[0]
        if y.shape[1] == 1:
            return torch.sigmoid(y)
        return torch.softmax(y.float(), dim=1)[:, 1:2]


class Backend(Protocol):
    name: str  # "torch" | "onnxruntime" | "bundle"
    device: str  # what really ran: "cpu", "cuda:0", "CUDAExecutionProvider", …
    precision: str  # "fp32" | "amp-fp16"

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


class TorchBackend:
    """A torch module on ``device``; fp16 autocast when ``amp`` and the device is CUDA (never on CPU)."""

    name = "torch"

    def __init__(self, net: torch.nn.Module, device: torch.device, *, amp: bool = True, compile: bool = False):
        self.torch_device = torch.device(device)
        module = ProbabilityNet(net) if not isinstance(net, ProbabilityNet) else net
        self.module = module.to(self.torch_device).eval()
        self.amp = bool(amp and self.torch_device.type == "cuda")
        self.precision = "amp-fp16" if self.amp else "fp32"
        if compile:
            self.module = torch.compile(self.module)  # type: ignore[assignment]
        self.device = str(self.torch_device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.torch_device, dtype=torch.float32)
        if self.amp:
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                return self.module(x).float()
        return self.module(x)


class OnnxRuntimeBackend:
    """An ONNX model (input ``image`` [B,1,D,H,W] → output ``prob``) through ONNX Runtime."""

    name = "onnxruntime"
    precision = "fp32"

    def __init__(self, path: Path | str, device: torch.device, *, sha256: str | None = None,
                 tensorrt: bool = False, threads: int | None = None):
        import onnxruntime as ort

        ort.set_default_logger_severity(4)
        p = verify_file(path, sha256, what="ONNX model")
        dev = torch.device(device)
        providers: list = []
        if dev.type == "cuda" and torch.cuda.is_available():
            if tensorrt and "TensorrtExecutionProvider" in ort.get_available_providers():
                providers.append(("TensorrtExecutionProvider", {"device_id": dev.index or 0,
                                                                "trt_fp16_enable": True}))
            providers.append(("CUDAExecutionProvider", {"device_id": dev.index or 0}))
        providers.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load {p}: {' '.join(str(err).split())[:300]}") from err
        self.device = self.session.get_providers()[0]
        self.input_name = self.session.get_inputs()[0].name
        log.info("onnxruntime session on %s", self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", dtype=torch.float32).contiguous().numpy()
        (out,) = self.session.run(None, {self.input_name: arr})
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def load_network(spec: ModelSpec) -> torch.nn.Module:
    """The model card's network with its verified weights, on the CPU, in eval mode."""
    net = build_network(spec.architecture.name, spec.architecture.params)
    path = spec.weights.path()
    state = load_state_dict(path, spec.weights.sha256)
    return load_into(net, state, source=str(path)).eval()


def load_bundle_network(folder: Path | str) -> tuple[torch.nn.Module, dict]:
    """A MONAI bundle's network (``network_def`` of configs/inference.json) with models/model.pt loaded.

    Returns the network and the bundle's metadata (configs/metadata.json).
    """
    from monai.bundle import ConfigParser

    root = Path(folder)
    meta_p, inf_p, w_p = root / "configs" / "metadata.json", root / "configs" / "inference.json", root / "models" / "model.pt"
    for p in (meta_p, inf_p, w_p):
        if not p.is_file():
            raise ModelError(f"MONAI bundle {root} lacks {p.relative_to(root)}; a bundle needs "
                             "configs/metadata.json, configs/inference.json and models/model.pt")
    try:
        meta = json.loads(meta_p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"bundle metadata {meta_p} is not valid JSON: {err}") from err
    parser = ConfigParser()
    try:
        parser.read_config(str(inf_p))
        parser.parse()
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"bundle config {inf_p} cannot be parsed: {err}") from err
    if "network_def" not in parser.config:
        raise ModelError(f"bundle config {inf_p} has no 'network_def'")
    try:
        net = parser.get_parsed_content("network_def")
    except Exception as err:  # noqa: BLE001
        raise ModelError(f"bundle {root}: network_def cannot be instantiated: {err}") from err
    sha = (meta.get("preread") or {}).get("sha256")
    state = load_state_dict(w_p, sha)
    return load_into(net, state, source=str(w_p)).eval(), meta


class BundleBackend(TorchBackend):
    """A MONAI bundle folder, run with torch."""

    name = "bundle"

    def __init__(self, folder: Path | str, device: torch.device, *, amp: bool = True):
        net, self.metadata = load_bundle_network(folder)
        super().__init__(net, device, amp=amp)


def create_backend(spec: ModelSpec, backend: str | None, device: torch.device, *, amp: bool = True,
                   compile: bool = False, tensorrt: bool = False, bundle_dir: Path | str | None = None) -> Backend:
    """The backend ``backend`` (None: the card's default) for ``spec`` on ``device``."""
    name = (backend or spec.backend).lower()
    if name in ("onnx", "ort"):
        name = "onnxruntime"
    if name == "torch":
        return TorchBackend(load_network(spec), device, amp=amp, compile=compile)
    if name == "onnxruntime":
        if spec.onnx is None:
            raise ModelError(f"model {spec.name!r} has no ONNX file in its card; run "
                             f"`preread export --format onnx --model {spec.name}` first")
        return OnnxRuntimeBackend(spec.onnx.path(), device, sha256=spec.onnx.sha256, tensorrt=tensorrt)
    if name == "bundle":
        folder = bundle_dir or spec.bundle
        if not folder:
            raise ModelError(f"model {spec.name!r} names no MONAI bundle folder; set 'bundle:' in its card")
        p = Path(folder)
        if not p.is_absolute():
            p = REPO_ROOT / p
        return BundleBackend(p, device, amp=amp)
    raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
