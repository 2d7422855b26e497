"""DICOM output with highdicom: a Segmentation of the AI nodules and a Comprehensive 3D SR measurement report.

* :func:`write_seg`: a binary DICOM Segmentation (one segment per AI finding, segment label = finding id,
  tracking id/UID per finding), its frames derived from, and positioned on, the source CT slices.
* :func:`write_sr`: a Comprehensive 3D SR with a TID 1500 Measurement Report; per nodule a TID 1411
  Volumetric ROI group that references its segment (and through it the source images) and holds TID 300
  measurements: long axis and short axis (on the axial image where the nodule is largest, which is
  referenced), mean diameter, maximum 3-D diameter and volume. (TID 1411 allows no SCOORD3D on its
  measurements; the axis end points stay in the JSON and the overlays.)

Codes (SNOMED CT, LOINC, UCUM) and the identity of the writer are data in ``configs/dicom_out.yaml``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from pipelines.config import load_yaml_config
from pipelines.types import field_of as _get
from pipelines.errors import DicomExportError
from pipelines.types import AIFinding

logger = logging.getLogger(__name__)

SEG_FILENAME = "ai-nodules-seg.dcm"
SR_FILENAME = "ai-nodules-sr.dcm"


class CodeModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str
    scheme: str
    meaning: str

    def coded(self):
        from highdicom.sr import CodedConcept

        return CodedConcept(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)


class SegmentCodes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: CodeModel
    type: CodeModel
    display_color_rgb: tuple[int, int, int] = (255, 200, 0)


class AnatomyCodes(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lung: CodeModel
    right_lung: CodeModel
    left_lung: CodeModel
    lobes: dict[str, CodeModel]
    right: CodeModel
    left: CodeModel


class Identity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    manufacturer: str
    model_name: str
    device_serial_number: str
    algorithm_name: str
    seg_series_number: int
    sr_series_number: int
    seg_series_description: str
    sr_series_description: str


class DicomOutConfig(BaseModel):
    """Codes and identity for SEG/SR; values and their sources in ``configs/dicom_out.yaml``."""

    model_config = ConfigDict(extra="forbid")
    segment: SegmentCodes
    anatomy: AnatomyCodes
    procedure_reported: CodeModel
    identity: Identity


def load_dicom_out_config(path: str | Path | None = None) -> DicomOutConfig:
    return load_yaml_config(DicomOutConfig, "dicom_out.yaml", path, what="DICOM output config")


def _version() -> str:
    try:
        return metadata.version("preread")
    except metadata.PackageNotFoundError:
        return "0"


def _check_sources(source_datasets: Sequence[pydicom.Dataset], shape: tuple[int, ...] | None = None) -> None:
    if not source_datasets:
        raise DicomExportError("no source DICOM slices given", hint="SEG/SR need the CT series they annotate")
    need = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
            "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
    for n, ds in enumerate(source_datasets):
        missing = [a for a in need if a not in ds]
        if missing:
            raise DicomExportError(f"source slice {n} lacks {', '.join(missing)}",
                                   hint="SEG/SR can only reference complete CT image headers")
    series = {ds.SeriesInstanceUID for ds in source_datasets}
    if len(series) != 1:
        raise DicomExportError(f"source slices come from {len(series)} series; give the one series analysed")
    if shape is not None:
        K, J, I = shape
        if len(source_datasets) != K:
            raise DicomExportError(f"masks have {K} slices but {len(source_datasets)} source slices were given",
                                   hint="pass the source headers in the volume's k order, one per slice")
        bad = [n for n, ds in enumerate(source_datasets) if (int(ds.Rows), int(ds.Columns)) != (J, I)]
        if bad:
            raise DicomExportError(f"source slice {bad[0]} is {source_datasets[bad[0]].Rows}x"
                                   f"{source_datasets[bad[0]].Columns}, masks are {J}x{I}")


@dataclass
class _Segment:
    number: int
    finding: AIFinding
    tracking_uid: str


def _anatomy(finding: AIFinding, cfg: DicomOutConfig):
    """(anatomic region code, laterality code or None) for a finding's location."""
    a = cfg.anatomy
    lobe = (finding.location.lobe or "").upper() or None
    side = (finding.location.side or "").lower() or None
    if lobe in a.lobes:
        region = a.lobes[lobe]
    elif side == "right":
        region = a.right_lung
    elif side == "left":
        region = a.left_lung
    else:
        region = a.lung
    lat = a.right if side == "right" else a.left if side == "left" else None
    return region, lat


def write_seg(
    source_datasets: Sequence[pydicom.Dataset],
    masks: Mapping[str, np.ndarray],
    findings: Sequence[AIFinding],
    out_dir: str | Path,
    *,
    config: DicomOutConfig | None = None,
) -> Path:
    """Write ``<out_dir>/ai-nodules-seg.dcm``: one binary segment per finding (in the findings' order).

    ``source_datasets``: the source CT slices' headers in the volume's k order; ``masks[finding.id]``: bool
    ``[k, j, i]`` on that grid. Findings without a mask, or with an empty one, are left out (logged).
    Raises :class:`DicomExportError` when masks and sources do not match.
    """
    import highdicom as hd

    cfg = config or load_dicom_out_config()
    segs: list[_Segment] = []
    arrays: list[np.ndarray] = []
    shape = None
    for f in findings:
        m = masks.get(f.id)
        if m is None or not np.any(m):
            logger.warning("finding %s has no mask; left out of the DICOM SEG", f.id)
            continue
        m = np.asarray(m, dtype=bool)  # no copy of a bool mask (N full-size masks are held already)
        if shape is None:
            shape = m.shape
        elif m.shape != shape:
            raise DicomExportError(f"mask of {f.id} has shape {m.shape}, others {shape}")
        segs.append(_Segment(number=len(segs) + 1, finding=f, tracking_uid=generate_uid()))
        arrays.append(m)
    if not segs:
        raise DicomExportError("no finding has a non-empty mask; there is nothing to put in a DICOM SEG")
    _check_sources(source_datasets, shape)
    pixel = np.stack(arrays, axis=-1)  # [frames=k, rows=j, cols=i, segments]

    algo = hd.AlgorithmIdentificationSequence(name=cfg.identity.algorithm_name, version=_version(),
                                              family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    for s in segs:
        region, _ = _anatomy(s.finding, cfg)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=s.number, segment_label=s.finding.id[:64],
            segmented_property_category=cfg.segment.category.coded(),
            segmented_property_type=cfg.segment.type.coded(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo,
            tracking_uid=s.tracking_uid, tracking_id=s.finding.id[:64], anatomic_regions=[region.coded()],
            display_color=hd.color.CIELabColor.from_rgb(*cfg.segment.display_color_rgb)
            if hasattr(hd.color.CIELabColor, "from_rgb") else None,
        ))
    seg = hd.seg.Segmentation(
        source_images=list(source_datasets), pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=generate_uid(), series_number=cfg.identity.seg_series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=cfg.identity.manufacturer,
        manufacturer_model_name=cfg.identity.model_name, software_versions=_version(),
        device_serial_number=cfg.identity.device_serial_number, series_description=cfg.identity.seg_series_description,
        content_description="AI nodule segmentation; not for clinical use", content_label="AI_NODULES",
        omit_empty_frames=True, content_qualification="RESEARCH",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SEG_FILENAME
    seg.save_as(path)
    logger.info("DICOM SEG with %d segment(s) written", len(segs))
    return path


def write_sr(
    source_datasets: Sequence[pydicom.Dataset],
    seg: str | Path | pydicom.Dataset,
    findings: Sequence[AIFinding],
    measurements: Mapping[str, Any] | Sequence[Any] | None,
    out_dir: str | Path,
    *,
    config: DicomOutConfig | None = None,
) -> Path:
    """Write ``<out_dir>/ai-nodules-sr.dcm``: a TID 1500 report with one volumetric group per segmented finding.

    Values are the findings' own (``long_axis_mm``, ``short_axis_mm``, ``mean_diameter_mm``,
    ``max_3d_diameter_mm``, ``volume_mm3``), so the SR equals the JSON; ``measurements[id]`` (a
    ``LesionMeasurement``, or a list in the findings' order) gives the axial slice the axes were measured on.
    """
    import highdicom as hd
    from highdicom.sr import (
        DeviceObserverIdentifyingAttributes, FindingSite, Measurement, MeasurementReport, ObservationContext,
        ObserverContext, SourceImageForMeasurement, TrackingIdentifier,
        VolumetricROIMeasurementsAndQualitativeEvaluations,
    )

    cfg = config or load_dicom_out_config()
    _check_sources(source_datasets)
    seg_ds = pydicom.dcmread(seg) if isinstance(seg, (str, Path)) else seg
    if getattr(seg_ds, "Modality", None) != "SEG":
        raise DicomExportError("the segmentation given to write_sr is not a DICOM SEG")
    if isinstance(measurements, Mapping):
        meas = dict(measurements)
    elif measurements is None:
        meas = {}
    else:
        meas = {f.id: m for f, m in zip(findings, measurements)}
    by_id = {f.id[:64]: f for f in findings}
    uid_by_sop = {ds.SOPInstanceUID: ds for ds in source_datasets}
    mm = codes.UCUM.Millimeter
    mm3 = codes.UCUM.CubicMillimeter
    algo = hd.sr.AlgorithmIdentification(name=cfg.identity.algorithm_name, version=_version())

    groups = []
    for item in seg_ds.SegmentSequence:
        fid = str(getattr(item, "TrackingID", item.SegmentLabel))
        f = by_id.get(fid)
        if f is None:
            logger.warning("segment %s of the SEG matches no finding; left out of the SR", item.SegmentNumber)
            continue
        m = meas.get(f.id)
        region, lat = _anatomy(f, cfg)
        site = FindingSite(anatomic_location=region.coded(), laterality=lat.coded() if lat else None)
        k = _get(m, "axial_slice_k", _get(f, "axial_slice_k"))
        axial_refs = None
        if k is not None and 0 <= int(k) < len(source_datasets):
            axial_refs = [SourceImageForMeasurement.from_source_image(source_datasets[int(k)])]

        ms = [
            Measurement(name=codes.SCT.LongAxis, value=float(f.long_axis_mm), unit=mm,
                        referenced_images=axial_refs),
            Measurement(name=codes.SCT.ShortAxis, value=float(f.short_axis_mm), unit=mm,
                        referenced_images=axial_refs),
            Measurement(name=codes.SCT.Diameter, value=float(f.mean_diameter_mm), unit=mm, derivation=codes.SCT.Mean),
            Measurement(name=codes.SCT.Diameter, value=float(f.max_3d_diameter_mm), unit=mm,
                        derivation=codes.SCT.Maximum),
            Measurement(name=codes.SCT.Volume, value=float(f.volume_mm3), unit=mm3),
        ]
        groups.append(VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=str(item.TrackingUID), identifier=fid),
            referenced_segment=_referenced_segment(seg_ds, int(item.SegmentNumber)),
            finding_type=cfg.segment.type.coded(), finding_category=cfg.segment.category.coded(),
            finding_sites=[site], algorithm_id=algo, measurements=ms,
        ))
    if not groups:
        raise DicomExportError("no segment of the SEG matches a finding; nothing to report")
    observer = ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=cfg.identity.algorithm_name, manufacturer_name=cfg.identity.manufacturer,
            model_name=cfg.identity.model_name))
    report = MeasurementReport(
        observation_context=ObservationContext(observer_device_context=observer),
        procedure_reported=cfg.procedure_reported.coded(), imaging_measurements=groups,
    )
    evidence = list(source_datasets) + [seg_ds]
    # evidence must cover what the SR references: the source images the SEG was derived from
    missing = [u for u in _seg_source_uids(seg_ds) if u not in uid_by_sop]
    if missing:
        raise DicomExportError(f"the SEG references {len(missing)} image(s) not among the source slices given")
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=generate_uid(),
        series_number=cfg.identity.sr_series_number, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=cfg.identity.manufacturer, is_complete=True, is_final=False, is_verified=False,
        series_description=cfg.identity.sr_series_description, content_qualification="RESEARCH",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / SR_FILENAME
    sr.save_as(path)
    logger.info("Comprehensive 3D SR with %d nodule group(s) written", len(groups))
    return path


def frame_segment_numbers(seg_ds: pydicom.Dataset) -> list[int | None]:
    """The segment number of each frame of a DICOM SEG: from the frame's functional groups, or from the shared
    ones (where highdicom puts it when the SEG has one segment); None where neither has it."""
    shared = seg_ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg_ds else None
    shared_no = None
    if shared is not None and "SegmentIdentificationSequence" in shared:
        shared_no = int(shared.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    return [int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            if "SegmentIdentificationSequence" in fg else shared_no
            for fg in seg_ds.PerFrameFunctionalGroupsSequence]


def _referenced_segment(seg_ds: pydicom.Dataset, segment_number: int):
    """TID 1411 segment reference with the source images of that segment's frames.

    (highdicom's ``ReferencedSegment.from_segmentation`` expects the segment number in every frame's
    functional groups; a one-segment SEG keeps it in the shared groups, so the frames are read here.)
    """
    from highdicom.sr import ReferencedSegment, SourceImageForSegmentation

    refs: dict[str, str] = {}
    for fg, no in zip(seg_ds.PerFrameFunctionalGroupsSequence, frame_segment_numbers(seg_ds)):
        if no != segment_number:
            continue
        for der in getattr(fg, "DerivationImageSequence", []):
            for src in getattr(der, "SourceImageSequence", []):
                refs.setdefault(str(src.ReferencedSOPInstanceUID), str(src.ReferencedSOPClassUID))
    if not refs:
        raise DicomExportError(f"segment {segment_number} of the SEG has no frame derived from a source image")
    return ReferencedSegment(
        sop_class_uid=seg_ds.SOPClassUID, sop_instance_uid=seg_ds.SOPInstanceUID, segment_number=segment_number,
        source_images=[SourceImageForSegmentation(referenced_sop_class_uid=c, referenced_sop_instance_uid=u)
                       for u, c in refs.items()])


def _seg_source_uids(seg_ds: pydicom.Dataset) -> list[str]:
    uids = []
    for s in getattr(seg_ds, "ReferencedSeriesSequence", []):
        for r in getattr(s, "ReferencedInstanceSequence", []):
            uids.append(str(r.ReferencedSOPInstanceUID))
    return uids


__all__ = ["write_seg", "write_sr", "load_dicom_out_config", "DicomOutConfig", "SEG_FILENAME", "SR_FILENAME"]
