"""``make_study(seed, cfg)``: one synthetic chest CT study with exact ground truth and a paired report."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from pipelines.types import Volume
from training.synthetic import nodules as nod
from training.synthetic.config import COMPOSITIONS, SynthConfig, load_tables
from training.synthetic.phantom import LOBES, Anatomy
from training.synthetic.reports import make_report, needs
from training.synthetic.scanner import NoiseBank, SmoothField, apply_kernel, noise_sigma
from training.synthetic.vessels import build_trees, render_segments

log = logging.getLogger(__name__)

HU_MIN, HU_MAX = -1024, 3071  # what 12-bit CT with RescaleIntercept -1024 can store


@dataclass
class SynthStudy:
    """A synthetic study: HU volume with DICOM geometry, label maps, truth (JSON-able) and report text."""

    volume: Volume
    labels: np.ndarray  # int16 [k, j, i]: 0 background, n = nodule with truth id n
    lung_labels: np.ndarray  # uint8 [k, j, i]: 1 right lung, 2 left lung (airways excluded)
    lobe_labels: np.ndarray | None  # uint8 [k, j, i]: 1 RUL 2 RML 3 RLL 4 LUL 5 LLL
    truth: dict
    report: str
    seed: int
    config: SynthConfig
    timings_s: dict = field(default_factory=dict)  # wall time per stage (not part of the truth)


def _uid(seed: int, what: str) -> str:
    """A deterministic UID under the 2.25 root (ISO/IEC 9834-8: a 128-bit integer), from the seed."""
    digest = hashlib.sha256(f"preread-synthetic/{seed}/{what}".encode()).hexdigest()[:32]
    return f"2.25.{int(digest, 16)}"


def _weighted(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = [k for k, w in weights.items() if w > 0]
    p = np.array([weights[k] for k in keys], float)
    return str(keys[int(rng.choice(len(keys), p=p / p.sum()))])


def _draw_nodule_specs(cfg: SynthConfig, rng: np.random.Generator, relation: str) -> list[dict]:
    if cfg.nodules is not None:
        specs = []
        for s in cfg.nodules:
            specs.append({
                "composition": s.composition or _weighted(rng, cfg.composition_weights),
                "shape": s.shape or _weighted(rng, cfg.shape_weights),
                "placement": s.placement or _weighted(rng, cfg.placement_weights),
                "diameter": s.diameter_mm, "solid_fraction": s.solid_fraction,
                "side": {"right": 1, "left": 2}.get(s.side or "", None),
            })
    else:
        need = needs(relation)
        n = 0 if rng.random() < cfg.p_no_nodule else int(rng.integers(cfg.n_nodules[0], cfg.n_nodules[1] + 1))
        n = max(n, need["min_nodules"])
        specs = [{"composition": _weighted(rng, cfg.composition_weights), "shape": _weighted(rng, cfg.shape_weights),
                  "placement": _weighted(rng, cfg.placement_weights), "diameter": None, "solid_fraction": None,
                  "side": None} for _ in range(n)]
        if specs and need.get("first_solid_mm"):
            lo, hi = need["first_solid_mm"]
            specs[0]["composition"] = "solid"
            # the relation's range clipped to the config's, so a config without overlap (masses only, say) gets
            # the nearest size it allows instead of an empty range
            dmin, dmax = cfg.nodule_diameter_mm
            lo_s = float(np.clip(lo, dmin, dmax))
            specs[0]["diameter"] = float(rng.uniform(lo_s, float(np.clip(hi, lo_s, dmax))))
    lo, hi = cfg.nodule_diameter_mm
    for s in specs:
        if s["diameter"] is None:
            d = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            if s["composition"] == "part-solid":
                d = max(d, min(8.0, hi))
            if s["composition"] == "calcified":
                d = min(d, 12.0)
            if s["composition"] == "solid" and d > 20.0:
                d = float(rng.uniform(8.0, 20.0))
            s["diameter"] = d
    return specs


def make_study(seed: int, cfg: SynthConfig | None = None) -> SynthStudy:
    """Draw one study, deterministic in ``seed`` for a given config."""
    cfg = cfg or SynthConfig.preset("fast")
    tables = load_tables()
    hu = tables.tissue_hu
    seed = int(seed)
    ss = np.random.SeedSequence([seed & 0xFFFFFFFF, 0x5EED])
    rg = [np.random.default_rng(s) for s in ss.spawn(8)]
    rng_geo, rng_anat, rng_tree, rng_nod, rng_tex, rng_noise, rng_rep, rng_shape = rg

    timings: dict[str, float] = {}
    t_last = [time.perf_counter()]

    def _tick(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - t_last[0], 4)
        t_last[0] = now

    # ---- acquisition
    screening = bool(rng_rep.random() < tables.report.screening_probability) if cfg.screening is None \
        else cfg.screening
    relation = cfg.report_relation or _weighted(rng_rep, tables.report.relation_weights)
    if cfg.kernel:
        kernel = next(k for k in tables.kernels if k.name == cfg.kernel)
    else:
        kernel = tables.kernels[int(rng_geo.integers(len(tables.kernels)))]
    if cfg.ctdi_mgy is not None:
        ctdi = float(rng_geo.uniform(*cfg.ctdi_mgy))
    else:
        ctdi = float(rng_geo.uniform(1.0, 3.0) if screening else rng_geo.uniform(5.0, 14.0))
    T = float(cfg.slice_thickness_mm[int(rng_geo.integers(len(cfg.slice_thickness_mm)))])
    n_in = min(cfg.rows, cfg.cols)
    max_half = n_in * cfg.pixel_spacing_mm[1] / 2.0 - 24.0
    bx = float(rng_geo.uniform(-8, 8))
    by = float(rng_geo.uniform(-22, -6))
    z0 = float(rng_geo.uniform(-320.0, -160.0))
    lung_hu = hu["lung"] + float(rng_anat.uniform(-1, 1)) * hu["lung_jitter"]
    anat = Anatomy.draw(rng_anat, bx, by, z0, lung_hu=lung_hu, emphysema_probability=cfg.emphysema_probability,
                        max_half_width=max_half)
    px = float(rng_geo.uniform(*cfg.pixel_spacing_mm))
    px = float(np.clip(max(px, (2.0 * anat.a0 + 40.0) / n_in), cfg.pixel_spacing_mm[0], cfg.pixel_spacing_mm[1]))
    px = round(px, 4)
    if cfg.n_slices is None:
        z_lo, z_hi = -float(rng_geo.uniform(25.0, 45.0)), anat.H + float(rng_geo.uniform(15.0, 30.0))
        nk = int(np.ceil((z_hi - z_lo) / T))
    else:
        nk = cfg.n_slices
        mid = anat.H * 0.47
        z_lo = mid - nk * T / 2.0
    ni, nj = cfg.cols, cfg.rows
    origin = np.array([-(ni - 1) / 2.0 * px, -(nj - 1) / 2.0 * px, round(z0 + z_lo, 3)])
    spacing = np.array([px, px, T])
    shape_kji = (nk, nj, ni)

    _tick("setup")
    # ---- trees
    vessels, lumens, walls = build_trees(anat, rng_tree, cfg.vessel_points_per_tree)

    _tick("trees")
    # ---- nodules: draw, place, shape
    specs = _draw_nodule_specs(cfg, rng_nod, relation)
    placed = []
    taken: list[tuple[np.ndarray, float]] = []
    fov_lo = origin + 0.0
    fov_hi = origin + spacing * (np.array([ni, nj, nk]) - 1)
    for spec in specs:
        r = spec["diameter"] / 2.0
        pad = np.array([r + 2.0, r + 2.0, r + 0.5 * T])
        bounds = (fov_lo + pad, fov_hi - pad)
        got = nod.place(anat, vessels, rng_nod, spec["placement"], r, taken, side=spec["side"], bounds=bounds)
        if got is None and spec["placement"] != "central":
            got = nod.place(anat, vessels, rng_nod, "central", r, taken, side=spec["side"], bounds=bounds)
            if got is not None:
                spec["placement"] = "central"
        if got is None:
            log.debug("could not place a %.1f mm nodule; skipped", spec["diameter"])
            continue
        c, side = got
        shp = nod.make_shape(rng_shape, spec["shape"], spec["diameter"], c, spec["composition"],
                             spec["solid_fraction"])
        if spec["placement"] == "juxtapleural":
            shp.clip = anat
        taken.append((c, shp.extent()))
        placed.append((spec, shp, side))

    _tick("placement")
    # ---- render anatomy slice by slice
    ys = origin[1] + px * np.arange(nj)
    xs = origin[0] + px * np.arange(ni)
    Y, X = np.meshgrid(ys.astype(np.float32), xs.astype(np.float32), indexing="ij")
    m_z = max(1, int(np.ceil(T / cfg.fine_step_mm - 1e-6)))
    m_bg = max(1, int(np.ceil(T / cfg.background_step_mm - 1e-6)))
    vess = np.zeros(shape_kji, np.uint8)
    lum = np.zeros(shape_kji, np.uint8)
    wal = np.zeros(shape_kji, np.uint8)
    render_segments(vess, vessels, origin, spacing, m_z)
    render_segments(wal, walls, origin, spacing, m_z)
    render_segments(lum, lumens, origin, spacing, m_z)
    tex = SmoothField(rng_tex, shape_kji, spacing, cell_mm=7.0)
    emph = SmoothField(rng_tex, shape_kji, spacing, cell_mm=3.0) if anat.emphysema > 0 else None
    cache = anat.prepare(X, Y, px, hu)
    box = cache["box"]
    vol = np.empty(shape_kji, np.float32)
    lung_lab = np.zeros(shape_kji, np.uint8)
    lobe_lab = np.zeros(shape_kji, np.uint8)
    inv255 = np.float32(1.0 / 255.0)
    for k in range(nk):
        zc = origin[2] + k * T
        acc = None
        for s in range(m_bg):
            zs = zc + ((s + 0.5) / m_bg - 0.5) * T
            kf = k + (zs - zc) / T
            field = np.float32(anat.lung_hu) + np.float32(hu["lung_texture"]) * tex.slice(kf, box)
            ef = emph.slice(kf, box) if emph is not None else None
            img, ll, lb, soft = anat.render_slice(cache, zs, px, T / m_bg, hu, field, ef, cfg.fissures)
            acc = img if acc is None else acc + img
            if s == m_bg // 2:
                ll_c, lb_c, soft_c = ll, lb, soft
        img = acc / m_bg if m_bg > 1 else acc
        v = vess[k][box] * inv255 * soft_c
        img += (np.float32(hu["blood"]) - img) * v
        w = wal[k][box] * inv255 * soft_c
        img += (np.float32(hu["airway_wall"]) - img) * w
        lum_k = lum[k][box]
        img += (np.float32(hu["air"]) - img) * (lum_k * inv255)
        lumen = lum_k >= 128
        ll_c[lumen] = 0
        lb_c[lumen] = 0
        vol[k] = cache["background"]
        vol[k][box] = img
        lung_lab[k][box] = ll_c
        lobe_lab[k][box] = lb_c
    del vess, lum, wal

    _tick("anatomy_and_vessels")
    # ---- nodules into the volume
    labels = np.zeros(shape_kji, np.int16)
    s_z = int(np.clip(np.ceil(T / (px * 0.5)), 3, 10))
    truth_nodules = []
    nid = 0
    for spec, shp, side in placed:
        sl, occ, core = nod.render_occupancy(shp, origin, spacing, shape_kji, s_xy=3, s_z=s_z)
        if sl is None:
            continue
        nid += 1
        comp = spec["composition"]
        base = {"solid": "nodule_solid", "part-solid": "nodule_ggo", "ground-glass": "nodule_ggo",
                "calcified": "nodule_calcified"}[comp]
        val = hu[base] + rng_nod.uniform(-1, 1) * hu[base + "_jitter"]
        tex_n = rng_nod.normal(size=occ.shape).astype(np.float32)
        tex_n = (tex_n - tex_n.mean()) * (25.0 if comp in ("ground-glass", "part-solid") else 8.0)
        sub = vol[sl]
        nod_hu = np.float32(val) + tex_n
        out = sub * (1.0 - occ) + nod_hu * occ
        if core is not None:
            solid = np.float32(hu["nodule_solid"] + rng_nod.uniform(-1, 1) * hu["nodule_solid_jitter"])
            out += (solid - nod_hu) * core
        vol[sl] = out
        lab = labels[sl]
        lab[occ >= 0.5] = nid
        m = nod.measure(shp)
        solid_mm = None
        if shp.core_axes is not None:
            solid_mm = round(nod.measure(shp.core_shape())["mean_diameter_mm"], 2)
        c = np.array(m["center_mm"])
        cv = (c - origin) / spacing
        cvi = [int(np.clip(round(v_), 0, n - 1)) for v_, n in zip(cv, (ni, nj, nk))]
        lobe_code = int(anat.lobe_at(c[None])[0])
        truth_nodules.append({
            "id": nid, "label": nid, "composition": comp,
            "solid_component_mm": solid_mm if comp == "part-solid" else None,
            "shape": spec["shape"], "placement": spec["placement"],
            "center_mm": [round(float(v_), 3) for v_ in c], "center_voxel": cvi,
            "long_axis_mm": round(m["long_axis_mm"], 2), "short_axis_mm": round(m["short_axis_mm"], 2),
            "mean_diameter_mm": round(m["mean_diameter_mm"], 2),
            "max_3d_diameter_mm": round(m["max_3d_diameter_mm"], 2), "volume_mm3": round(m["volume_mm3"], 1),
            "axial_z_mm": round(m["axial_z_mm"], 3),
            "side": "right" if side == 1 else "left", "lobe": LOBES.get(lobe_code),
            "nominal_diameter_mm": round(spec["diameter"], 2),
            "label_voxels": int((lab == nid).sum()),
            "hu": round(float(val), 1),
        })

    _tick("nodules_and_truth")
    # ---- scanner: kernel blur/sharpening, noise, quantisation
    apply_kernel(vol, px, kernel)
    sigma = noise_sigma(kernel, ctdi, T, anat.a0)
    out = np.empty(shape_kji, np.int16)
    bank = NoiseBank(rng_noise, (nj, ni), px, kernel) if cfg.noise else None
    for k in range(nk):
        sl = vol[k]
        if bank is not None:
            sl = sl + np.float32(sigma) * bank.draw()
        np.clip(np.rint(sl), HU_MIN, HU_MAX, out=sl)
        out[k] = sl
    del vol

    _tick("scanner")
    # ---- geometry, UIDs, truth
    instance_numbers = [nk - k for k in range(nk)]  # head first: instance 1 is the most superior slice
    study_uid, series_uid = _uid(seed, "study"), _uid(seed, "series")
    sop = [_uid(seed, f"sop/{k}") for k in range(nk)]
    for t in truth_nodules:
        t["instance_number"] = instance_numbers[t["center_voxel"][2]]
    meta = {
        "synthetic": True, "seed": seed, "kernel": kernel.name, "manufacturer": kernel.vendor,
        "ctdi_vol_mgy": round(ctdi, 2), "noise_sigma_hu": round(sigma, 1), "slice_thickness_mm": T,
        "screening": screening, "emphysema": round(anat.emphysema, 3),
        "series_number": int(rng_geo.integers(2, 6)),
    }
    volume = Volume(
        array=out, spacing_mm=tuple(float(s) for s in spacing), origin_mm=tuple(float(o) for o in origin),
        direction=np.eye(3), instance_numbers=instance_numbers, sop_instance_uids=sop, study_uid=study_uid,
        series_uid=series_uid, frame_of_reference_uid=_uid(seed, "for"), modality="CT", metadata=meta,
    )
    report_text, report_truth = make_report(rng_rep, truth_nodules, relation=relation, screening=screening,
                                            meta=meta, anat=anat, tables=tables.report)
    truth = {
        "study_uid": study_uid, "series_uid": series_uid, "seed": seed,
        "spacing_mm": [float(s) for s in spacing], "origin_mm": [float(o) for o in origin],
        "shape_ijk": [ni, nj, nk], "direction": np.eye(3).tolist(),
        "acquisition": meta, "nodules": truth_nodules, "report": report_truth,
        "measurement": {"definition": "Fleischner 2017 (Bankier et al., Radiology 2017;285:584): long axis and "
                                      "longest perpendicular short axis on the axial plane where the long axis is "
                                      "greatest, from the analytic shape; mean = (long + short) / 2",
                        "labels": "label n where the partial-volume occupancy of nodule n is >= 0.5"},
        "lobe_codes": LOBES, "lung_codes": {"1": "right", "2": "left"},
        "compositions": list(COMPOSITIONS),
    }
    _tick("report")
    timings["total"] = round(sum(timings.values()), 4)
    return SynthStudy(volume=volume, labels=labels, lung_labels=lung_lab, lobe_labels=lobe_lab, timings_s=timings,
                      truth=truth, report=report_text, seed=seed, config=cfg)
