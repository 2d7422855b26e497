"""Model registry: a model name → its spec, read from the model card ``configs/models/<name>.yaml``.

A model card states the contract in the spirit of a MONAI bundle's ``metadata.json``: architecture and its
parameters, the weights file and its sha256, input spacing and HU window, patch size, inference settings
(thresholds, coarse/fine spacing, sliding-window settings), the training data and the measured metrics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import ModelError
from models.fpr import Reducer

REPO_ROOT = Path(__file__).resolve().parents[1]


def configs_dir() -> Path:
    return Path(os.environ.get("PREREAD_CONFIGS_DIR", REPO_ROOT / "configs"))


def models_dir() -> Path:
    return configs_dir() / "models"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArchitectureSpec(_Spec):
    name: str  # unet | basicunet | segresnet (models.networks.ARCHITECTURES)
    params: dict[str, Any] = Field(default_factory=dict)


class FileSpec(_Spec):
    file: str  # relative to the repository root, or absolute
    sha256: str | None = None

    def path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() else REPO_ROOT / p


class InputSpec(_Spec):
    hu_window: tuple[float, float]  # HU clipped to this window then scaled to [0, 1]
    spacing_mm: tuple[float, float, float]  # isotropic spacing the fine pass runs at (x, y, z)
    patch_size: tuple[int, int, int]  # training patch (voxels at spacing_mm)


class EdgeGrowthSpec(_Spec):
    """Growth of a candidate's mask out to the nodule's edge in the image (``pipelines.refine``).

    The network's mask (probability ≥ ``threshold``) lies inside the nodule: a solid nodule loses its partial-volumed
    border, a ground-glass or part-solid one its faint rim. Voxels within ``reach_mm`` of the mask, connected to it,
    whose HU (smoothed by ``sigma_mm``) reaches the nodule's edge level are added. The lung level is the median HU of a
    ``shell_mm`` shell around the mask over voxels below ``background_max_hu``. The edge level is, for a mask whose core
    is solid (``configs/measurement.yaml`` composition), ``solid_edge_fraction`` of the way from the lung to the core's
    median HU (0.5: the half-maximum edge); otherwise ``subsolid_delta_hu`` above the lung, and the growth is refused
    when more than ``subsolid_max_solid_fraction`` of the added voxels are solid (a vessel, the chest wall).
    """

    reach_mm: float = Field(gt=0)
    sigma_mm: float = Field(ge=0)
    solid_edge_fraction: float | None = Field(None, gt=0, lt=1)  # None: solid masks are left as they are
    subsolid_delta_hu: float | None = Field(None, gt=0)  # None: subsolid masks are left as they are
    subsolid_max_solid_fraction: float = Field(0.08, ge=0, le=1)
    shell_mm: tuple[float, float] = (4.0, 9.0)
    background_max_hu: float = -600.0
    min_background_voxels: int = Field(20, ge=1)

    @field_validator("shell_mm")
    @classmethod
    def _shell_is_a_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1]:
            raise ValueError(f"shell_mm must be [inner, outer] mm with 0 <= inner < outer, got {list(v)}")
        return v


class InferenceSpec(_Spec):
    coarse_spacing_mm: float = Field(gt=0)  # the coarse pass over the lungs runs at this isotropic spacing
    fine_spacing_mm: float = Field(gt=0)  # the fine pass around each candidate runs at this isotropic spacing
    roi_size: tuple[int, int, int]  # sliding-window size (voxels)
    overlap: float = Field(0.25, ge=0, lt=1)
    sw_batch_size: int = 2
    single_pass_max_voxels: int = 0  # an input up to this size runs whole (no sliding-window overlap)
    # a second sweep of the lung box at this spacing, its probability fused with the coarse pass's by the voxel-wise
    # maximum: the coarse pass keeps a large lesion whole, the finer one finds small faint (ground-glass) nodules
    # that the coarse grid blurs away; None: no second pass
    second_pass_spacing_mm: float | None = Field(None, gt=0)
    second_pass_roi_size: tuple[int, int, int] | None = None  # windows of this size; None: as the coarse pass
    candidate_threshold: float = Field(ge=0, le=1)  # coarse-pass probability that makes a candidate region
    threshold: float = Field(ge=0, le=1)  # fine-pass probability that makes the candidate's mask
    min_confidence: float = Field(ge=0, le=1)  # candidates whose max fine probability is below this are dropped
    lung_margin_mm: float  # the lung mask's bounding box is grown by this much
    fine_margin_mm: float  # margin around a coarse candidate for its fine crop
    min_volume_mm3: float  # smaller components are dropped
    # test-time mirroring: the probability is the mean of the prediction and of the predictions of the input
    # mirrored along these axes of [D, H, W] (0: slices, 1: rows, 2: columns); each axis costs one more sweep
    tta_flips: list[Literal[0, 1, 2]] = Field(default_factory=list)
    # hysteresis for small components: a component at ``threshold`` smaller than ``grow_below_mm3`` is replaced by
    # its connected region of probability >= ``grow_threshold`` (before the volume and shape filters). On thick
    # slices a 5 mm nodule is a handful of voxels and the network's peak over it covers one or two: without this
    # it is dropped as too small, or kept as a speck the false-positive reduction cannot tell from noise.
    # None: off (as in the shipped card: with the logistic reduction it found more but ranked worse, with the trees
    # it gave the same sensitivity at 1 FP/scan and more false positives;
    # training/logs/nodule-unet-s-gbm.experiment.json)
    grow_threshold: float | None = Field(None, gt=0, le=1)
    grow_below_mm3: float = Field(0.0, ge=0)
    # how the fine pass's probability is combined with the coarse pass's, resampled onto the same box:
    # "fine" (fine alone), "mean" (the two scales averaged: the coarse pass sees more context, which
    # keeps a large heterogeneous lesion whole), "max"
    fine_fusion: Literal["fine", "mean", "max", "coarse"] = "fine"  # coarse: no fine prediction
    min_compactness: float = 0.0  # sphere-equivalent diameter / largest extent (vessels are long, nodules not)
    max_elongation: float = 1e9  # sqrt of the ratio of the two largest principal variances of the mask
    min_lung_fraction: float = 0.5  # at least this fraction of a candidate lies in the lung mask grown by …
    lung_fraction_margin_mm: float = 3.0  # … this margin (mediastinum, chest wall and hila are not nodules)
    edge_growth: EdgeGrowthSpec | None = None  # grow masks out to the nodule's edge after detection; None: off

    @model_validator(mode="after")
    def _grow_below_threshold(self) -> InferenceSpec:
        if self.grow_threshold is not None and self.grow_threshold >= self.threshold:
            raise ValueError(f"grow_threshold ({self.grow_threshold}) must be below threshold ({self.threshold})")
        return self


class ModelSpec(_Spec):
    name: str
    version: str
    description: str = ""
    default: bool = False
    not_for_clinical_use: bool = True
    architecture: ArchitectureSpec
    weights: FileSpec
    onnx: FileSpec | None = None
    torchscript: FileSpec | None = None
    bundle: str | None = None  # a MONAI bundle folder, for backend "bundle"
    backend: Literal["torch", "onnxruntime", "bundle"] = "torch"
    input: InputSpec
    inference: InferenceSpec
    fp_reduction: Reducer | None = None  # second-stage candidate scorer (training/fpr.py); None: network only
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


def list_models() -> list[str]:
    d = models_dir()
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def default_model_name() -> str:
    names = list_models()
    defaults = [n for n in names if _read(models_dir() / f"{n}.yaml").get("default")]
    if len(defaults) == 1:
        return defaults[0]
    if not names:
        raise ModelError(f"no model cards in {models_dir()}; add configs/models/<name>.yaml")
    raise ModelError(f"expected exactly one model card with 'default: true' in {models_dir()}, "
                     f"found {defaults or 'none'}; pass a model name (one of {', '.join(names)})")


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ModelError(f"cannot read model card {path}: {err}") from err
    if not isinstance(data, dict):
        raise ModelError(f"model card {path} is not a YAML mapping")
    return data


def load_spec(name: str | None = None) -> ModelSpec:
    """The spec of model ``name`` (None: the card marked ``default: true``), or a path to a card."""
    if name and (name.endswith((".yaml", ".yml")) or os.sep in name):
        path = Path(name)
    else:
        name = name or default_model_name()
        path = models_dir() / f"{name}.yaml"
        if not path.is_file():
            raise ModelError(f"unknown model {name!r}; known: {', '.join(list_models()) or 'none'} "
                             f"(model cards live in {models_dir()})")
    try:
        return ModelSpec.model_validate(_read(path))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ModelError(f"model card {path} is invalid at {where}: {first['msg']} "
                         f"({len(err.errors())} problem(s))") from err
