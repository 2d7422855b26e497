"""Train the nodule segmentation network on synthetic studies (``preread train``).

Config-driven (``configs/training/<name>.yaml``), resumable (``checkpoint.pt`` in the run folder),
logs one JSON line per logged step and per validation to ``<run>/log.jsonl``. Loss: Dice + BCE
(MONAI ``DiceCELoss``, sigmoid, one Dice over the batch; ``dice_per_patch``: one per patch, see
:class:`PerPatchDiceCE`). AMP only on CUDA. At the end the best weights (by validation Dice)
are written to the model card's weights file and the card's sha256, training and metrics are updated.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from monai.losses import DiceCELoss, DiceLoss
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.networks import build_network
from models.registry import REPO_ROOT, models_dir
from models.weights import sha256_file
from pipelines.errors import ConfigError
from pipelines.paths import config_path
from training.data import POOLS, SamplingConfig, PatchStream, cache_studies, cut_patch

log = logging.getLogger(__name__)


class _C(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExtraData(_C):
    """More studies from another preset (e.g. thin-slice ``full``): sampled like the main ones, study by study."""

    preset: str
    overrides: dict[str, Any] | None = None  # None: the main set's overrides
    train_seeds: tuple[int, int]  # [start, stop)
    val_seeds: tuple[int, int] | None = None


class DataConfig(_C):
    preset: str = "fast"
    overrides: dict[str, Any] = Field(default_factory=dict)  # SynthConfig fields over the preset
    cache_dir: str | None = None  # generated studies kept here as .npz (relative: to the repository root)
    cache_workers: int = 0  # studies generated in parallel threads
    train_seeds: tuple[int, int]  # [start, stop)
    val_seeds: tuple[int, int]
    fractions: dict[str, float] = Field(default_factory=lambda: {"nodule": 0.4, "vessel": 0.25, "wall": 0.2,
                                                                  "lung": 0.15})
    vessel_hu: float = -400.0
    val_patches_per_study: int = 6
    extra: list[ExtraData] = Field(default_factory=list)


class TrainConfig(_C):
    model: str  # model card name: configs/models/<model>.yaml (weights path and architecture come from it)
    seed: int = 0
    patch_size: tuple[int, int, int]
    spacing_range_mm: tuple[float, float]
    hu_window: tuple[float, float]
    batch_size: int = 4
    steps: int = 1000
    lr: float = 2e-3
    weight_decay: float = 1e-5
    lambda_dice: float = 1.0
    lambda_ce: float = 1.0
    # Dice per patch, over the patches that hold nodule voxels (at least dice_min_voxels), instead of one Dice over
    # the batch: a batch Dice is dominated by the large nodules in it, and a 5 mm nodule's few voxels barely move it
    # (the network then marks only the core of a small nodule, or nothing). Cross-entropy stays over every voxel.
    # Tried, not used by the shipped model: training/logs/nodule-unet-s-pp.experiment.json
    dice_per_patch: bool = False
    dice_min_voxels: int = Field(1, ge=1)  # with dice_per_patch: a patch with fewer nodule voxels (a sliver) has no Dice
    log_every: int = 20
    val_every: int = 200
    threads: int | None = None
    noise_std: float = 0.02
    noise_prob: float = 0.3
    init_weights: str | None = None  # start from these weights (a state dict; relative: to the repository root)
    data: DataConfig


def load_config(name_or_path: str) -> TrainConfig:
    p = Path(name_or_path)
    if not p.suffix:
        p = config_path("training", f"{name_or_path}.yaml")
    if not p.is_file():
        raise ConfigError(f"training config {p} not found; pass a name under configs/training/ or a YAML path")
    try:
        return TrainConfig.model_validate(yaml.safe_load(p.read_text()))
    except (ValidationError, yaml.YAMLError) as err:
        raise ConfigError(f"training config {p} is invalid: {' '.join(str(err).split())[:400]}") from err


def _card(model: str) -> tuple[Path, dict]:
    p = models_dir() / f"{model}.yaml"
    if not p.is_file():
        raise ConfigError(f"model card {p} not found: the training config names model {model!r}")
    return p, yaml.safe_load(p.read_text())


class PerPatchDiceCE(torch.nn.Module):
    """Binary cross-entropy over all voxels plus the mean soft Dice loss of the patches that hold foreground."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0, min_voxels: int = 1):
        super().__init__()
        self.min_voxels = min_voxels
        self.dice = DiceLoss(sigmoid=True, batch=False, reduction="none")
        self.ce = torch.nn.BCEWithLogitsLoss()
        self.lambda_dice, self.lambda_ce = lambda_dice, lambda_ce

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = self.ce(logits, target)
        fg = target.flatten(1).sum(1) >= self.min_voxels
        if not bool(fg.any()):
            return self.lambda_ce * ce
        d = self.dice(logits[fg], target[fg]).mean()
        return self.lambda_dice * d + self.lambda_ce * ce


def _val_set(studies, cfg: TrainConfig, rng: np.random.RandomState) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation patches: per study, half centred on nodules, half on hard negatives/lung."""
    out = []
    mid = float(np.mean(cfg.spacing_range_mm))
    for n in range(len(studies)):
        item = studies[n]
        for v in range(cfg.data.val_patches_per_study):
            pool = POOLS[0] if v % 2 == 0 else POOLS[1 + (v // 2) % (len(POOLS) - 1)]
            pts = item["points"][pool]
            if len(pts) == 0:
                continue
            out.append(cut_patch(item, pts[rng.randint(len(pts))], mid, cfg.patch_size, cfg.hu_window))
    return out


@torch.no_grad()
def validate(net, val, device, batch: int = 4) -> dict[str, float]:
    """Dice over all validation patches pooled, and the false-positive voxel fraction on negative patches."""
    net.eval()
    inter = psum = tsum = fp = neg_vox = 0.0
    for s in range(0, len(val), batch):
        x = torch.stack([v[0] for v in val[s:s + batch]]).to(device)
        y = torch.stack([v[1] for v in val[s:s + batch]]).to(device)
        p = (torch.sigmoid(net(x)) >= 0.5).float()
        inter += float((p * y).sum()); psum += float(p.sum()); tsum += float(y.sum())
        neg = (y.flatten(1).sum(1) == 0)
        if neg.any():
            fp += float(p[neg].sum()); neg_vox += float(p[neg].numel())
    net.train()
    return {"val_dice": 2 * inter / max(psum + tsum, 1e-6), "val_fp_voxel_frac": fp / max(neg_vox, 1.0)}


def train(cfg: TrainConfig, run_dir: Path | str, *, device: torch.device | None = None, resume: bool = True,
          write_weights: bool = True, max_steps: int | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into ``run_dir``; returns a summary (best validation metrics, weights sha256)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    card_path, card = _card(cfg.model)
    arch = card["architecture"]
    net = build_network(arch["name"], arch.get("params")).to(dev)
    if cfg.init_weights:
        p = Path(cfg.init_weights)
        net.load_state_dict(torch.load(p if p.is_absolute() else REPO_ROOT / p, map_location=dev, weights_only=True))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps if max_steps is None else min(cfg.steps, max_steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 2), pct_start=0.1)
    use_amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = (PerPatchDiceCE(cfg.lambda_dice, cfg.lambda_ce, cfg.dice_min_voxels) if cfg.dice_per_patch
               else DiceCELoss(sigmoid=True, batch=True, lambda_dice=cfg.lambda_dice, lambda_ce=cfg.lambda_ce))

    ckpt_path, log_path = run / "checkpoint.pt", run / "log.jsonl"
    start, best = 0, {"val_dice": -1.0}
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        net.load_state_dict(ck["model"]); opt.load_state_dict(ck["optimizer"]); sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"]); start, best = ck["step"], ck["best"]
        torch.set_rng_state(ck["torch_rng"])
        sched.total_steps = max(steps, 2, start + 1)  # a longer run may resume a shorter one
        log.info("resumed from step %d", start)

    t0 = time.perf_counter()
    sampling = SamplingConfig(patch_size=cfg.patch_size, spacing_range_mm=cfg.spacing_range_mm,
                              hu_window=cfg.hu_window, fractions=cfg.data.fractions, vessel_hu=cfg.data.vessel_hu,
                              noise_std=cfg.noise_std, noise_prob=cfg.noise_prob)
    cache_dir = None
    if cfg.data.cache_dir:
        cache_dir = Path(cfg.data.cache_dir) if Path(cfg.data.cache_dir).is_absolute() else REPO_ROOT / cfg.data.cache_dir
    kw = {"overrides": cfg.data.overrides, "cache_dir": cache_dir, "num_workers": cfg.data.cache_workers}
    train_studies = cache_studies(list(range(*cfg.data.train_seeds)), cfg.data.preset, sampling, **kw)
    val_studies = cache_studies(list(range(*cfg.data.val_seeds)), cfg.data.preset, sampling, **kw)
    for ex in cfg.data.extra:
        kx = {**kw, "overrides": cfg.data.overrides if ex.overrides is None else ex.overrides}
        train_studies = torch.utils.data.ConcatDataset(
            [train_studies, cache_studies(list(range(*ex.train_seeds)), ex.preset, sampling, **kx)])
        if ex.val_seeds is not None:
            val_studies = torch.utils.data.ConcatDataset(
                [val_studies, cache_studies(list(range(*ex.val_seeds)), ex.preset, sampling, **kx)])
    val = _val_set(val_studies, cfg, np.random.RandomState(cfg.seed + 1))
    log.info("data ready: %d train, %d val studies, %d val patches in %.1f s", len(train_studies),
             len(val_studies), len(val), time.perf_counter() - t0)
    stream = iter(torch.utils.data.DataLoader(PatchStream(train_studies, sampling, seed=cfg.seed * 7919 + start),
                                              batch_size=cfg.batch_size, num_workers=0))

    def save_ckpt(step: int) -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "step": step, "best": best, "torch_rng": torch.get_rng_state(),
                    "config": cfg.model_dump(mode="json")}, tmp)
        os.replace(tmp, ckpt_path)

    net.train()
    losses: list[float] = []
    t_train = time.perf_counter()
    with log_path.open("a") as logf:
        for step in range(start + 1, steps + 1):
            batch = next(stream)
            x, y = batch["image"].to(dev), batch["label"].to(dev)
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(net(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            losses.append(float(loss.detach()))
            if not math.isfinite(losses[-1]):
                raise RuntimeError(f"loss became {losses[-1]} at step {step}")
            rec: dict[str, Any] | None = None
            if step % cfg.log_every == 0 or step == steps:
                rec = {"step": step, "loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0],
                       "elapsed_s": round(time.perf_counter() - t_train, 1)}
                losses = []
            if step % cfg.val_every == 0 or step == steps:
                metrics = validate(net, val, dev)
                rec = {**(rec or {"step": step}), **{k: round(v, 5) for k, v in metrics.items()}}
                if metrics["val_dice"] > best["val_dice"]:
                    best = {**metrics, "step": step}
                    torch.save(net.state_dict(), run / "best.pt")
                save_ckpt(step)
            if rec is not None:
                logf.write(json.dumps(rec) + "\n"); logf.flush()
                log.info("%s", rec)
    summary: dict[str, Any] = {"best": best, "steps": steps, "train_seconds": round(time.perf_counter() - t_train, 1),
                               "device": str(dev), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    if write_weights and (run / "best.pt").is_file():
        summary.update(_publish(cfg, card_path, card, run / "best.pt", summary))
    (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _publish(cfg: TrainConfig, card_path: Path, card: dict, best_pt: Path, summary: dict) -> dict:
    """Copy the best weights to the card's weights file and update the card's sha256 and training block."""
    card = yaml.safe_load(card_path.read_text())  # re-read: the card may have been edited during the run
    state = torch.load(best_pt, map_location="cpu", weights_only=True)
    wpath = Path(card["weights"]["file"])
    wpath = wpath if wpath.is_absolute() else REPO_ROOT / wpath
    wpath.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in state.items()}, wpath)
    digest = sha256_file(wpath)
    card["weights"]["sha256"] = digest
    card.setdefault("training", {}).update({
        "config": cfg.model_dump(mode="json"), "steps": summary["steps"], "best_step": summary["best"]["step"],
        "train_seconds": summary["train_seconds"], "device": summary["device"],
        "val_dice_patches": round(summary["best"]["val_dice"], 4),
    })
    card_path.write_text(yaml.safe_dump(card, sort_keys=False, width=110))
    log.info("weights written to %s (sha256 %s); card %s updated", wpath, digest, card_path)
    return {"weights": str(wpath), "sha256": digest}
