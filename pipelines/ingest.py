"""Ingest: any CT study input → the series found, the one selected, and a :class:`~pipelines.types.Volume`.

Inputs: a folder (nested, any file names, mixed series, non-DICOM files among them), a zip (extracted
safely, see :mod:`pipelines.ingest_archive`), a single DICOM file (single- or multi-frame Enhanced CT),
or a NIfTI / NRRD / MHA / MHD volume (read with SimpleITK, which returns LPS geometry; NIfTI's RAS on
disk is converted by SimpleITK).

Public API:

* :func:`load_study` → :class:`IngestResult` with ``.volume``, ``.series`` (every series found, as
  :class:`SeriesInfo`), ``.selected``, ``.summary()`` (the ``preread ingest`` JSON).
* :func:`read_volume` → :class:`Volume` for any supported input.

For DICOM output (SEG/SR) the result keeps, per *source* slice in stack order, ``source_files``,
``source_frames`` (0-based frame in a multi-frame file, else None), ``source_sop_instance_uids`` and
``source_sop_class_uids``; ``volume.metadata["source_index"][k]`` maps output slice k to its nearest
source slice (identity unless ``volume.metadata["resampled"]``), and :meth:`IngestResult.source_headers`
re-reads their headers. Inputs from a zip live in a temporary folder owned by the result until
:meth:`IngestResult.close` (or pass ``workdir=`` to keep them).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import UID

from pipelines.errors import GeometryError, IngestError, InputTooLargeError
from pipelines.ingest_archive import extract_zip, is_zip
from pipelines.ingest_config import IngestConfig, IngestLimits, default_ingest_config
from pipelines.ingest_dicom import SkippedFile, SliceRecord, check_decodable, decode_records, iter_files, scan_file
from pipelines.ingest_geometry import StackPlan, assemble, plan_stack
from pipelines.ingest_select import SeriesInfo, is_lung_kernel, orientation_label, select_series
from pipelines.types import Volume

__all__ = ["IngestResult", "SeriesInfo", "IngestLimits", "load_study", "read_volume", "IMAGE_SUFFIXES"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class IngestResult:
    """What :func:`load_study` found and read."""

    volume: Volume
    series: list[SeriesInfo]
    selected: SeriesInfo
    input_path: Path
    input_kind: str  # dicom-folder | zip | dicom-file | enhanced-ct | nifti | nrrd | mha
    source_files: list[Path] = field(default_factory=list)
    source_frames: list[int | None] = field(default_factory=list)
    source_sop_instance_uids: list[str] = field(default_factory=list)
    source_sop_class_uids: list[str | None] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    files_scanned: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def measurement_grade(self) -> bool:
        return bool(self.volume.metadata.get("measurement_grade", False))

    def source_headers(self) -> list[pydicom.Dataset]:
        """The source slices' DICOM headers (no pixel data), in stack order, for DICOM SEG/SR references."""
        return [pydicom.dcmread(p, stop_before_pixels=True, force=True) for p in dict.fromkeys(self.source_files)]

    def close(self) -> None:
        """Remove the temporary folder a zip was extracted to (no-op otherwise)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "IngestResult":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        """The ``preread ingest --json`` document: series found, the one selected, the volume's geometry."""
        v = self.volume
        arr = v.array
        reasons = Counter(_reason_kind(s.reason) for s in self.skipped)
        return {
            "input": str(self.input_path),
            "input_kind": self.input_kind,
            "study_uid": v.study_uid,
            "series_uid": v.series_uid,
            "selected": self.selected.to_dict(),
            "series": [s.to_dict() for s in self.series],
            "volume": {
                "shape_kji": list(arr.shape),
                "dtype": str(arr.dtype),
                "spacing_mm": list(v.spacing_mm),
                "origin_mm": [round(x, 4) for x in v.origin_mm],
                "direction": np.round(v.direction, 6).tolist(),
                "frame": "LPS",
                "hu_range": [float(arr.min()), float(arr.max())] if arr.size else None,
                "measurement_grade": self.measurement_grade,
                "not_measurement_grade_because": v.metadata.get("not_measurement_grade_because", []),
                "resampled": bool(v.metadata.get("resampled", False)),
                "first_instance_number": v.instance_number(0),
                "last_instance_number": v.instance_number(arr.shape[0] - 1),
            },
            "files": {
                "scanned": self.files_scanned,
                "images": sum(s.images for s in self.series),
                "skipped": len(self.skipped),
                "skipped_by_reason": dict(sorted(reasons.items())),
                "skipped_examples": [{"file": s.rel, "reason": s.reason} for s in self.skipped[:20]],
            },
            "warnings": list(v.warnings),
            "timings_s": {k: round(t, 4) for k, t in self.timings_s.items()},
        }


def _reason_kind(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0].strip()


# ------------------------------------------------------------------------------------------- entry

def load_study(path: str | Path, *, series_uid: str | None = None, limits: IngestLimits | None = None,
               config: IngestConfig | None = None, workdir: str | Path | None = None) -> IngestResult:
    """Read a study from a folder, zip, DICOM file or NIfTI/NRRD/MHA file and select its nodule series.

    ``limits`` overrides ``config.limits`` (default ``configs/ingest.yaml``); ``workdir`` is where a zip is
    extracted (a temporary folder owned by the result when None). Raises :class:`IngestError` (and its
    subclasses ``UnsafeArchiveError``, ``InputTooLargeError``, ``GeometryError``) for bad input.
    """
    cfg = config or default_ingest_config()
    if limits is not None:
        cfg = cfg.model_copy(update={"limits": limits})
    p = Path(path)
    t0 = time.perf_counter()
    try:
        p.stat()
    except (OSError, ValueError) as ex:
        raise IngestError(f"cannot open {p}: {getattr(ex, 'strerror', None) or ex or 'no such file or folder'}") from ex
    if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES):
        vol, kind = _read_image_file(p, cfg)
        info = _image_series_info(vol, kind)
        info.selected = True
        info.selection_reason = f"selected: the only volume in the {kind} file"
        return IngestResult(volume=vol, series=[info], selected=info, input_path=p, input_kind=kind,
                            files_scanned=1, timings_s={"total": time.perf_counter() - t0})
    tmp = None
    root = p
    kind = "dicom-folder" if p.is_dir() else "dicom-file"
    if p.is_file() and is_zip(p):
        kind = "zip"
        if workdir is None:
            tmp = tempfile.TemporaryDirectory(prefix="preread-ingest-")
            target = Path(tmp.name) / "study"
        else:
            target = Path(workdir)
            if target.exists() and any(target.iterdir()):
                raise IngestError(f"work folder {target} is not empty; give an empty or new folder")
        try:
            extract_zip(p, target, cfg.limits)
        except BaseException:
            if tmp is not None:
                tmp.cleanup()
            raise
        root = target
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's per-element VR warnings; our own warnings are reported
            result = _load_dicom(root, cfg, series_uid, kind, t0)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    result.input_path = p
    result._tmp = tmp
    return result


def read_volume(path: str | Path, *, series_uid: str | None = None, config: IngestConfig | None = None) -> Volume:
    """The :class:`Volume` of any supported input (DICOM folder/zip/file, NIfTI, NRRD, MHA), LPS geometry."""
    p = Path(path)
    if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES):
        return _read_image_file(p, config or default_ingest_config())[0]
    res = load_study(p, series_uid=series_uid, config=config)
    res.close()
    return res.volume


# ------------------------------------------------------------------------------------ image files

def _read_image_file(p: Path, cfg: IngestConfig) -> tuple[Volume, str]:
    import SimpleITK as sitk

    name = p.name.lower()
    kind = "nifti" if ".nii" in name else "nrrd" if name.endswith((".nrrd", ".nhdr")) else "mha"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as ex:
        raise IngestError(f"{p.name} is not a readable {kind.upper()} image: {_sitk_msg(ex)}") from ex
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4 and size[3] == 1:
        pass
    elif dim != 3:
        raise IngestError(f"{p.name} is a {dim}-D image of size {list(size)}; a CT volume is 3-D")
    if reader.GetNumberOfComponents() != 1:
        raise IngestError(f"{p.name} has {reader.GetNumberOfComponents()} components per voxel; a CT volume has one")
    nvox = int(np.prod(size[:3], dtype=np.int64))
    if nvox > cfg.limits.max_voxels:
        raise InputTooLargeError(f"{p.name} holds {nvox} voxels, more than limits.max_voxels ({cfg.limits.max_voxels})")
    try:
        img = reader.Execute()
    except RuntimeError as ex:
        raise IngestError(f"{p.name}: image data is corrupt or truncated: {_sitk_msg(ex)}") from ex
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    arr = sitk.GetArrayFromImage(img)  # [k, j, i]
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < -32768 or arr.max() > 32767):
            arr = arr.astype(np.float32)
        else:
            arr = arr.astype(np.int16, copy=False)
    else:
        arr = arr.astype(np.float32, copy=False)
    spacing = img.GetSpacing()
    if any(s <= 0 for s in spacing):
        raise GeometryError(f"{p.name} has non-positive spacing {list(spacing)}")
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    warnings = []
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise GeometryError(f"{p.name}: direction matrix is not orthonormal (sheared); resample it first")
    mg_reasons = []
    if spacing[2] > cfg.measurement_grade.max_gap_mm:
        mg_reasons.append(f"slice spacing {spacing[2]:.2f} mm exceeds {cfg.measurement_grade.max_gap_mm:g} mm")
    if arr.shape[0] < cfg.measurement_grade.min_slices:
        mg_reasons.append(f"fewer than {cfg.measurement_grade.min_slices} slices")
    warnings.append(f"{kind.upper()} input: values assumed to be HU; no DICOM header to confirm it")
    vol = Volume(
        array=arr, spacing_mm=tuple(spacing), origin_mm=tuple(img.GetOrigin()), direction=direction,
        instance_numbers=None, sop_instance_uids=None, study_uid=None, series_uid=None, modality="CT",
        warnings=warnings,
        metadata={"source": str(p), "format": kind, "measurement_grade": not mg_reasons,
                  "not_measurement_grade_because": mg_reasons, "resampled": False},
    )
    return vol, kind


def _sitk_msg(ex: Exception) -> str:
    lines = [ln.strip() for ln in str(ex).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(ex).__name__)[:200]


def _image_series_info(vol: Volume, kind: str) -> SeriesInfo:
    k, j, i = vol.array.shape
    d = vol.direction
    iop = np.concatenate([d[:, 0], d[:, 1]])
    cfg = default_ingest_config()
    return SeriesInfo(
        series_uid=None, study_uid=None, frame_of_reference_uid=None, series_number=None, modality="CT",
        description=f"{kind} volume", kernel=None, lung_kernel=False, rows=j, cols=i, images=k, slices=k,
        spacing_mm=list(vol.spacing_mm), slice_thickness_mm=None, orientation=np.round(iop, 6).tolist(),
        orientation_label=orientation_label(iop, cfg), transfer_syntax="", transfer_syntax_name=kind,
        lossy=False, tilt_deg=0.0, measurement_grade=bool(vol.metadata.get("measurement_grade")),
        warnings=list(vol.warnings),
    )


# ------------------------------------------------------------------------------------------ DICOM

def _load_dicom(root: Path, cfg: IngestConfig, series_uid: str | None, kind: str, t0: float) -> IngestResult:
    files, skipped = iter_files(root, cfg.limits.max_files)
    records: list[SliceRecord] = []
    for f in files:
        res = scan_file(f, root, cfg)
        if isinstance(res, SkippedFile):
            skipped.append(res)
        else:
            records.extend(res)
    t_scan = time.perf_counter()
    if not records:
        if kind == "dicom-file" and skipped:
            raise IngestError(f"{root.name}: {skipped[0].reason}",
                              hint="give a DICOM CT file or folder, a zip of one, or a NIfTI/NRRD/MHA volume")
        reasons = Counter(_reason_kind(s.reason) for s in skipped)
        what = ", ".join(f"{n} {r}" for r, n in reasons.most_common(4)) or "no files"
        raise IngestError(f"no DICOM images found in {root.name or root} ({len(files)} files: {what})",
                          hint="give a DICOM CT file or folder, a zip of one, or a NIfTI/NRRD/MHA volume")
    if kind == "dicom-file" and records[0].n_frames > 1:
        kind = "enhanced-ct"
    by_series: dict[str, list[SliceRecord]] = {}
    for r in records:
        by_series.setdefault(r.series_uid, []).append(r)
    infos: list[SeriesInfo] = []
    plans: dict[int, StackPlan] = {}
    for uid, recs in by_series.items():
        info, plan = _series_info(uid, recs, cfg)
        infos.append(info)
        if plan is not None:
            plans[id(info)] = plan
    infos.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.series_uid))
    selected = select_series(infos, cfg, series_uid)
    plan = plans[id(selected)]
    t_plan = time.perf_counter()

    recs = plan.records
    n_out = plan.n_out
    out_rows, out_cols = plan.out_rows_cols
    nvox = n_out * out_rows * out_cols
    if nvox > cfg.limits.max_voxels:
        raise InputTooLargeError(
            f"series {selected.series_uid} would hold {nvox} voxels ({out_cols}x{out_rows}x{n_out}), "
            f"more than limits.max_voxels ({cfg.limits.max_voxels})",
            hint="raise limits.max_voxels in configs/ingest.yaml if the machine has the memory")
    stack, decode_warnings = decode_records(recs, cfg)
    t_decode = time.perf_counter()
    asm = assemble(stack, plan, cfg.pixels.padding_fill_hu, cfg.measurement_grade.max_gap_mm)
    t_asm = time.perf_counter()

    warnings = list(selected.warnings) + decode_warnings
    selected.warnings.extend(decode_warnings)
    inst = [recs[s].instance_number for s in asm.source_index]
    sops = [recs[s].sop_instance_uid for s in asm.source_index]
    frames = [recs[s].frame for s in asm.source_index]
    metadata = {
        "source": str(root),
        "format": "dicom",
        "measurement_grade": plan.measurement_grade,
        "not_measurement_grade_because": list(plan.not_measurement_grade_because),
        "resampled": plan.resample,
        "source_index": asm.source_index,
        "interpolated": asm.interpolated,
        "source_positions_mm": [float(x) for x in plan.positions_mm],
        "frame_numbers": None if all(f is None for f in frames) else [None if f is None else f + 1 for f in frames],
        "tilt_deg": plan.tilt_deg,
        "kernel": selected.kernel,
        "series_description": selected.description,
        "series_number": selected.series_number,
        "transfer_syntax": selected.transfer_syntax,
        "lossy": selected.lossy,
        "uids_derived": selected.uids_derived,
    }
    vol = Volume(
        array=asm.array, spacing_mm=asm.spacing_mm, origin_mm=tuple(asm.origin_mm), direction=asm.direction,
        instance_numbers=inst, sop_instance_uids=sops, study_uid=selected.study_uid,
        series_uid=selected.series_uid, frame_of_reference_uid=selected.frame_of_reference_uid,
        modality="CT", warnings=warnings, metadata=metadata,
    )
    timings = {"scan": t_scan - t0, "plan": t_plan - t_scan, "decode": t_decode - t_plan,
               "assemble": t_asm - t_decode, "total": time.perf_counter() - t0}
    log.info("ingest: %d files, %d series, selected %d slices in %.2f s", len(files), len(infos), len(recs),
             timings["total"])
    return IngestResult(
        volume=vol, series=infos, selected=selected, input_path=root, input_kind=kind,
        source_files=[r.path for r in recs], source_frames=[r.frame for r in recs],
        source_sop_instance_uids=[r.sop_instance_uid for r in recs],
        source_sop_class_uids=[r.sop_class_uid for r in recs],
        skipped=skipped, files_scanned=len(files), timings_s=timings,
    )


def _geom_key(r: SliceRecord) -> tuple:
    iop = None if r.iop is None else tuple(np.round(r.iop, 3).tolist())
    ps = None if r.pixel_spacing is None else tuple(round(x, 4) for x in r.pixel_spacing)
    return (r.rows, r.cols, iop, ps)


def _series_info(uid: str, recs: list[SliceRecord], cfg: IngestConfig) -> tuple[SeriesInfo, StackPlan | None]:
    """Describe one series and plan its stack (header only). Problems make it ineligible, not an error."""
    warnings: list[str] = []
    r0 = recs[0]
    localizers = [r for r in recs if r.is_localizer]
    captures = [r for r in recs if r.is_secondary_capture and not r.is_localizer]
    images = [r for r in recs if not r.is_localizer and not r.is_secondary_capture]
    if localizers and images:
        warnings.append(f"{len(localizers)} localizer image(s) excluded from the stack")
    if captures and images:
        warnings.append(f"{len(captures)} secondary capture image(s) excluded from the stack")
    ineligible = None
    error: Exception | None = None
    stack = images
    if images:
        groups: dict[tuple, list[SliceRecord]] = {}
        for r in images:
            groups.setdefault(_geom_key(r), []).append(r)
        if len(groups) > 1:
            best_key = max(groups, key=lambda k: (len(groups[k]), str(k)))
            stack = groups[best_key]
            others = len(images) - len(stack)
            warnings.append(f"{others} image(s) with another orientation, size or pixel spacing excluded "
                            f"from the stack of {len(stack)}")
    ref = stack[0] if stack else r0
    ts_counts = Counter(r.transfer_syntax for r in stack or recs)
    ts = ts_counts.most_common(1)[0][0]
    if len(ts_counts) > 1:
        warnings.append(f"mixed transfer syntaxes in one series: {', '.join(sorted(ts_counts))}")
    lossy_ts = {t for t in ts_counts if t in set(cfg.pixels.lossy_transfer_syntaxes)}
    lossy_flag = any(r.lossy_flag for r in (stack or recs))
    lossy = bool(lossy_ts) or lossy_flag
    if lossy_ts:
        names = ", ".join(f"{UID(t).name} ({t})" for t in sorted(lossy_ts))
        warnings.append(f"lossy compression ({names}): HU values may differ from the scanner's")
    elif lossy_flag:
        warnings.append("LossyImageCompression = 01: the pixels were lossy-compressed once; HU values may differ")
    derived = sorted({u for r in recs for u in r.derived_uids})
    if derived:
        warnings.append(f"missing {', '.join(derived)}: stable UIDs derived from the header")
    for note in sorted({n for r in recs for n in r.notes}):
        warnings.append(note)
    modality = r0.modality
    if not modality:
        if r0.is_ct:
            modality = "CT"
            warnings.append("Modality missing; CT assumed from the SOP class")
    plan: StackPlan | None = None
    if not images:
        ineligible = "localizer images only" if localizers else "secondary capture images only"
    elif (modality or "").upper() != "CT":
        ineligible = f"modality {modality or 'unknown'}, not CT"
    else:
        try:
            check_decodable(ts)
            plan = plan_stack(stack, cfg)
        except IngestError as ex:
            ineligible = str(ex)
            error = ex
    if plan is not None:
        warnings.extend(plan.warnings)
        for why in plan.not_measurement_grade_because:
            warnings.append(f"not measurement grade: {why}")
    spacing = None
    if plan is not None:
        spacing = [round(plan.spacing_xy[0], 6), round(plan.spacing_xy[1], 6), round(plan.spacing_z, 6)]
    elif ref.pixel_spacing is not None:
        spacing = [ref.pixel_spacing[1], ref.pixel_spacing[0], None]
    info = SeriesInfo(
        series_uid=uid, study_uid=r0.study_uid, frame_of_reference_uid=r0.frame_of_reference_uid,
        series_number=r0.series_number, modality=modality, description=r0.description, kernel=r0.kernel,
        lung_kernel=is_lung_kernel(r0.kernel, cfg), rows=ref.rows, cols=ref.cols, images=len(recs),
        slices=len(plan.records) if plan is not None else len(stack), spacing_mm=spacing,
        slice_thickness_mm=ref.slice_thickness,
        orientation=None if ref.iop is None else [round(float(x), 6) for x in ref.iop],
        orientation_label=orientation_label(ref.iop, cfg), transfer_syntax=ts, transfer_syntax_name=UID(ts).name,
        lossy=lossy, tilt_deg=plan.tilt_deg if plan is not None else 0.0,
        measurement_grade=plan.measurement_grade if plan is not None else False, uids_derived=derived,
        warnings=warnings, eligible=ineligible is None, ineligible_because=ineligible, error=error,
    )
    return info, plan
