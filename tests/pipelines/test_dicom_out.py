"""DICOM SEG and Comprehensive 3D SR: read back with highdicom and pydicom, values equal, frames on the right voxels."""

from __future__ import annotations

import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines.dicom_out import SEG_FILENAME, load_dicom_out_config, write_seg, write_sr
from pipelines.errors import DicomExportError
from pipelines.measure import measure_mask
from pipelines.types import Volume

K, J, I = 12, 48, 40
SPACING = (0.8, 0.7, 2.5)  # (sx, sy, sz) mm, deliberately anisotropic


def write_ct_series(folder: Path, *, k_descending: bool = False) -> list[Path]:
    """A small axial CT series written with pydicom: K slices of J x I, known geometry and UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    paths = []
    for k in range(K):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"x{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "TEST^PHANTOM", "PR-TEST-1", "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = datetime.date(2024, 1, 2).strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101010"
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber = "CT", "TEST", 3
        ds.InstanceNumber = k + 1
        z = (K - 1 - k if k_descending else k) * SPACING[2] - 100.0
        ds.ImagePositionPatient = [-16.0, -12.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = J, I
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (rng.integers(0, 1200, (J, I)).astype(np.int16)).tobytes()
        # file names in an order unrelated to k
        p = folder / f"{(k * 7) % K:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def read_sources(folder: Path, *, headers_only: bool = True) -> list[pydicom.Dataset]:
    """The source headers sorted into the volume's k order (ascending position along the slice normal)."""
    ds = [pydicom.dcmread(p, stop_before_pixels=headers_only) for p in sorted(folder.glob("*.dcm"))]
    return sorted(ds, key=lambda d: float(d.ImagePositionPatient[2]))


def volume_of(sources: list[pydicom.Dataset]) -> Volume:
    arr = np.zeros((K, J, I), np.int16)
    return Volume(array=arr, spacing_mm=SPACING, origin_mm=tuple(float(v) for v in sources[0].ImagePositionPatient),
                  sop_instance_uids=[d.SOPInstanceUID for d in sources],
                  instance_numbers=[int(d.InstanceNumber) for d in sources])


def make_masks() -> dict[str, np.ndarray]:
    k, j, i = np.meshgrid(np.arange(K), np.arange(J), np.arange(I), indexing="ij", sparse=True)
    a = ((i - 12) * SPACING[0]) ** 2 + ((j - 14) * SPACING[1]) ** 2 + ((k - 5) * SPACING[2]) ** 2 <= 6.0 ** 2
    b = ((i - 28) * SPACING[0]) ** 2 + ((j - 33) * SPACING[1]) ** 2 + ((k - 8) * SPACING[2]) ** 2 <= 4.0 ** 2
    return {"n1": a, "n2": b}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dicom_out")
    write_ct_series(tmp / "ct")
    sources = read_sources(tmp / "ct")
    vol = volume_of(sources)
    masks = make_masks()
    findings, meas = [], {}
    for fid, m in masks.items():
        lm = measure_mask(vol, m, use_image=False)
        f = lm.to_ai_finding(fid, 0.9)
        f.location.side, f.location.lobe = ("right", "RUL") if fid == "n1" else ("left", None)
        findings.append(f)
        meas[fid] = lm
    seg_path = write_seg(sources, masks, findings, tmp / "out")
    sr_path = write_sr(sources, seg_path, findings, meas, tmp / "out")
    return sources, masks, findings, meas, seg_path, sr_path


def test_seg_reads_back_and_frames_land_on_source_voxels(written):
    sources, masks, findings, _, seg_path, _ = written
    ds = pydicom.dcmread(seg_path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    labels = {int(s.SegmentNumber): str(s.TrackingID) for s in ds.SegmentSequence}
    assert sorted(labels.values()) == ["n1", "n2"]
    for s in ds.SegmentSequence:
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"  # SCT Nodule
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    # rebuild each mask from the frames: source SOPInstanceUID → k, and check the plane position
    k_of = {d.SOPInstanceUID: k for k, d in enumerate(sources)}
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    rebuilt = {fid: np.zeros((K, J, I), bool) for fid in labels.values()}
    for n, fg in enumerate(ds.PerFrameFunctionalGroupsSequence):
        uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k = k_of[uid]
        pos = [float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient]
        assert np.allclose(pos, [float(v) for v in sources[k].ImagePositionPatient])
        seg_no = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        rebuilt[labels[seg_no]][k] |= frames[n].astype(bool)
    for fid, m in masks.items():
        assert np.array_equal(rebuilt[fid], m)


def test_seg_with_highdicom_api(written):
    sources, masks, _, _, seg_path, _ = written
    seg = hd.seg.segread(seg_path)
    uids = [d.SOPInstanceUID for d in sources]
    nums = {str(seg.get_segment_description(n).tracking_id): n for n in seg.segment_numbers}
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[nums["n1"], nums["n2"]],
                                            ignore_spatial_locations=True)
    assert arr.shape == (K, J, I, 2)
    assert np.array_equal(arr[..., 0].astype(bool), masks["n1"])
    assert np.array_equal(arr[..., 1].astype(bool), masks["n2"])


def _group_values(group) -> dict[str, float]:
    out = {}
    for m in group.get_measurements():
        name = m.name.meaning
        deriv = m.derivation.meaning if m.derivation is not None else None
        key = {"Long axis": "long", "Short axis": "short", "Volume": "volume"}.get(name)
        if name == "Diameter":
            key = "mean" if deriv == "Mean" else "max3d" if deriv == "Maximum" else None
        out[key] = float(m.value)
    return out


def test_sr_measurements_equal_the_findings(written):
    sources, _, findings, meas, seg_path, sr_path = written
    sr = hd.sr.srread(sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    seg_ds = pydicom.dcmread(seg_path)
    by_id = {f.id: f for f in findings}
    for g in groups:
        fid = g.tracking_identifier
        f = by_id[fid]
        v = _group_values(g)
        assert v == pytest.approx({"long": f.long_axis_mm, "short": f.short_axis_mm, "mean": f.mean_diameter_mm,
                                   "max3d": f.max_3d_diameter_mm, "volume": f.volume_mm3}, rel=1e-6)
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg_ds.SOPInstanceUID
        (seg_no,) = ref.referenced_segment_numbers
        tracked = {int(s.SegmentNumber): str(s.TrackingID) for s in seg_ds.SegmentSequence}
        assert tracked[seg_no] == fid
        assert g.finding_type.value == "27925004"
    # the long axis references the axial source image where the nodule is largest
    g1 = next(g for g in groups if g.tracking_identifier == "n1")
    long_m = g1.get_measurements(name=codes.SCT.LongAxis)[0]
    img_refs = long_m.referenced_images
    assert img_refs and img_refs[0].referenced_sop_instance_uid == sources[meas["n1"].axial_slice_k].SOPInstanceUID
    # finding site: upper lobe of right lung, laterality right
    sites = g1.finding_sites
    assert sites[0].value.value == load_dicom_out_config().anatomy.lobes["RUL"].value
    assert sites[0].laterality.value == "24028007"  # SCT Right
    # evidence lists the source series and the SEG
    ev = {r.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
          for se in s.ReferencedSeriesSequence for r in se.ReferencedSOPSequence}
    assert {d.SOPInstanceUID for d in sources} <= ev and seg_ds.SOPInstanceUID in ev


def test_sr_pydicom_plain_read(written):
    """The SR also opens with plain pydicom and carries the long axis in mm as a NUM item."""
    _, _, findings, _, _, sr_path = written
    ds = pydicom.dcmread(sr_path)
    nums = []

    def walk(items):
        for it in items:
            if it.ValueType == "NUM" and it.ConceptNameCodeSequence[0].CodeValue == "103339001":
                mv = it.MeasuredValueSequence[0]
                assert mv.MeasurementUnitsCodeSequence[0].CodeValue == "mm"
                nums.append(float(mv.NumericValue))
            walk(getattr(it, "ContentSequence", []))

    walk(ds.ContentSequence)
    assert sorted(nums) == pytest.approx(sorted(f.long_axis_mm for f in findings), abs=1e-4)


def test_mismatched_sources_are_refused(written, tmp_path):
    sources, masks, findings, *_ = written
    with pytest.raises(DicomExportError, match="slices"):
        write_seg(sources[:-1], masks, findings, tmp_path)
    with pytest.raises(DicomExportError, match="non-empty mask"):
        write_seg(sources, {}, findings, tmp_path)
    assert not (tmp_path / SEG_FILENAME).exists()


def test_descending_slice_order_and_full_headers(tmp_path):
    """Slices stored head-to-feet (k order by position is what the caller passes) and headers with pixels."""
    write_ct_series(tmp_path / "ct", k_descending=True)
    sources = read_sources(tmp_path / "ct", headers_only=False)
    vol = volume_of(sources)
    masks = {"a": make_masks()["n1"]}
    f = measure_mask(vol, masks["a"], use_image=False).to_ai_finding("a", 0.8)
    seg_path = write_seg(sources, masks, [f], tmp_path / "out")
    seg = hd.seg.segread(seg_path)
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID for d in sources],
                                            segment_numbers=[1], ignore_spatial_locations=True)
    assert np.array_equal(arr[..., 0].astype(bool), masks["a"])
    sr_path = write_sr(sources, seg_path, [f], None, tmp_path / "out")
    assert hd.sr.srread(sr_path).content.get_volumetric_roi_measurement_groups()[0].tracking_identifier == "a"


def test_real_lidc_series_seg_lands_on_the_readers_nodule(shared_data, tmp_path):
    """lidc-idri-0001: a reader's nodule contours as the mask; the SEG frames reference the right slices."""
    import xml.etree.ElementTree as ET

    from skimage.draw import polygon

    folder = shared_data / "ct" / "lidc-idri-0001"
    sources = sorted((pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")),
                     key=lambda d: float(d.ImagePositionPatient[2]))
    zs = [float(d.ImagePositionPatient[2]) for d in sources]
    ns = "{http://www.nih.gov}"
    session = next(ET.parse(folder / "annotations-lidc.xml").getroot().iter(ns + "readingSession"))
    mask = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), bool)
    for roi in session.iter(ns + "roi"):
        z = float(roi.find(ns + "imageZposition").text)
        k = int(np.argmin(np.abs(np.array(zs) - z)))
        pts = [(int(e.find(ns + "xCoord").text), int(e.find(ns + "yCoord").text)) for e in roi.findall(ns + "edgeMap")]
        if abs(zs[k] - z) > 0.5 or len(pts) < 3:
            continue
        xs, ys = zip(*pts)
        rr, cc = polygon(ys, xs, mask.shape[1:])
        mask[k, rr, cc] = True
    assert mask.sum() > 1000
    vol = Volume(array=np.zeros(mask.shape, np.int16), spacing_mm=(*map(float, sources[0].PixelSpacing[::-1]),
                 zs[1] - zs[0]), origin_mm=tuple(float(v) for v in sources[0].ImagePositionPatient))
    f = measure_mask(vol, mask, use_image=False).to_ai_finding("lidc-1", 0.95)
    seg_path = write_seg(sources, {"lidc-1": mask}, [f], tmp_path)
    seg = hd.seg.segread(seg_path)
    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=[d.SOPInstanceUID for d in sources],
                                            segment_numbers=[1])
    assert np.array_equal(arr[..., 0].astype(bool), mask)
    sr = hd.sr.srread(write_sr(sources, seg_path, [f], None, tmp_path))
    (g,) = sr.content.get_volumetric_roi_measurement_groups()
    assert _group_values(g)["long"] == pytest.approx(f.long_axis_mm)


def test_a_one_segment_seg_is_read_back_for_the_viewer(tmp_path):
    """highdicom keeps a one-segment SEG's segment number in the shared functional groups: the viewer's
    reader still puts every frame's outline on the right slice (a study with one AI finding)."""
    from pipelines.dicom_out import frame_segment_numbers
    from serving.viewer import seg_masks_by_slice

    write_ct_series(tmp_path / "ct")
    sources = read_sources(tmp_path / "ct")
    vol = volume_of(sources)
    m = make_masks()["n1"]
    f = measure_mask(vol, m, use_image=False).to_ai_finding("n1", 0.9)
    seg_path = write_seg(sources, {"n1": m}, [f], tmp_path / "out")
    assert set(frame_segment_numbers(pydicom.dcmread(seg_path))) == {1}
    by_k = seg_masks_by_slice(seg_path, vol)
    rebuilt = np.zeros_like(m)
    for k, items in by_k.items():
        for seg_no, mask in items:
            assert seg_no == 1
            rebuilt[k] |= mask
    assert np.array_equal(rebuilt, m)
