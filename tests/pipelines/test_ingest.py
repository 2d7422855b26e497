"""Ingest on the committed real-data subset (tests/data/ingest, see its ATTRIBUTION.md).

Edge cases (shuffled names, junk files, localizers, duplicates, missing slices, per-slice rescale,
padding) are made by copying those real slices and changing the one header element under test.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import UID, generate_uid

from pipelines.errors import GeometryError, IngestError, InputTooLargeError
from pipelines.ingest import load_study, read_volume
from pipelines.ingest_config import IngestConfig, IngestLimits, default_ingest_config

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
TS = DATA / "transfer-syntaxes"
LIDC = DATA / "lidc-idri-0001-crop"
TILT = DATA / "gantry-tilt-crop"
KERNELS = DATA / "lung-pet-ct-dx-a0001-crop"
STRIPPED = DATA / "jp2k-stripped-header"

LOSSLESS = [
    "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
    "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
    "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
]


def _ipp(p: Path) -> np.ndarray:
    return np.array([float(x) for x in pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient])


def _copy_shuffled(src: Path, dst: Path, seed: int = 0) -> dict[str, Path]:
    """Copy a series under random names into nested folders; returns SOPInstanceUID → new path."""
    rng = random.Random(seed)
    files = sorted(src.glob("*.dcm"))
    rng.shuffle(files)
    out = {}
    for n, f in enumerate(files):
        sub = dst / f"sub{n % 3}" / ("deeper" if n % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        target = sub / f"{rng.getrandbits(40):x}"
        shutil.copyfile(f, target)
        out[pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID] = target
    return out


# ------------------------------------------------------------------------------ transfer syntaxes

@pytest.fixture(scope="module")
def reference_hu() -> np.ndarray:
    return load_study(TS / "CTImage.dcm").volume.array


@pytest.mark.parametrize("name", LOSSLESS)
def test_lossless_transfer_syntax_gives_identical_hu(name, reference_hu):
    res = load_study(TS / name)
    assert np.array_equal(res.volume.array, reference_hu)
    assert res.selected.lossy is False
    assert not any("lossy" in w for w in res.volume.warnings)


def test_reference_slice_is_hu_not_raw(reference_hu):
    ds = pydicom.dcmread(TS / "CTImage.dcm")
    expected = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    assert np.array_equal(reference_hu.astype(np.int32)[0], expected)


def test_lossy_transfer_syntax_is_flagged():
    res = load_study(TS / "CTImage.dcm_JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91.dcm")
    assert res.selected.lossy is True
    assert any("lossy" in w and "HU" in w for w in res.volume.warnings)
    assert any("lossy" in w for w in res.summary()["selected"]["warnings"])


def test_retired_jpeg_fails_with_clear_error():
    with pytest.raises(IngestError, match=r"1\.2\.840\.10008\.1\.2\.4\.55.*cannot be decoded"):
        load_study(TS / "CTImage.dcm_JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm")


# ------------------------------------------------------------------------------- sorting/geometry

def test_sorted_by_position_not_by_name_with_junk_and_nesting(tmp_path):
    by_uid = _copy_shuffled(LIDC, tmp_path)
    (tmp_path / "notes.txt").write_text("not a DICOM file")
    (tmp_path / "sub0" / "empty").write_bytes(b"")
    (tmp_path / "sub1" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    (tmp_path / "DICM-lookalike").write_bytes(b"\x08\x00" + bytes(300))  # passes the sniff, not parseable
    res = load_study(tmp_path)
    vol = res.volume
    assert vol.array.shape == (16, 96, 96)
    assert vol.spacing_mm[2] == pytest.approx(2.5)
    assert res.selected.slices == 16
    assert res.files_scanned == 20 and len(res.skipped) == 4
    # slice k sits at the position of the file whose SOPInstanceUID is listed at k
    for k, uid in enumerate(vol.sop_instance_uids):
        assert np.allclose(vol.voxel_to_mm([0, 0, k]), _ipp(by_uid[uid]), atol=1e-3)
    z = [vol.voxel_to_mm([0, 0, k])[2] for k in range(16)]
    assert np.all(np.diff(z) > 0)
    ins = [pydicom.dcmread(by_uid[u], stop_before_pixels=True).InstanceNumber for u in vol.sop_instance_uids]
    assert vol.instance_numbers == [int(x) for x in ins]
    assert res.measurement_grade


def test_source_files_follow_slice_order():
    res = load_study(LIDC)
    assert len(res.source_files) == 16
    headers = res.source_headers()
    assert [h.SOPInstanceUID for h in headers] == res.volume.sop_instance_uids
    assert all("PixelData" not in h for h in headers)


def test_padding_value_with_signedness_mismatch(tmp_path):
    ds = pydicom.dcmread(TS / "CTImage.dcm")
    arr = ds.pixel_array.copy()
    assert ds.PixelRepresentation == 1
    arr[:20, :20] = -2000
    ds.PixelData = arr.tobytes()
    ds.add_new(0x00280120, "US", 63536)  # -2000 written as unsigned (explicit VR US), as LIDC files do
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(tmp_path / "pad.dcm")
    res = load_study(tmp_path / "pad.dcm")
    fill = default_ingest_config().pixels.padding_fill_hu
    assert np.all(res.volume.array[0, :20, :20] == fill)
    assert res.volume.array[0, 100, 100] == int(arr[100, 100]) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
    assert any("read as signed -2000" in w for w in res.volume.warnings)


def test_per_slice_rescale_is_applied(tmp_path):
    base = load_study(LIDC).volume
    files = sorted(LIDC.glob("*.dcm"))
    for f in files:
        shutil.copyfile(f, tmp_path / f.name)
    uid_int, uid_slope = base.sop_instance_uids[3], base.sop_instance_uids[9]
    for f in tmp_path.iterdir():
        ds = pydicom.dcmread(f)
        if ds.SOPInstanceUID == uid_int:
            ds.RescaleIntercept = -1000
            ds.save_as(f)
        elif ds.SOPInstanceUID == uid_slope:
            raw = ds.pixel_array.astype(np.int16)
            ds.PixelData = (raw * 2).astype(np.int16).tobytes()
            ds.RescaleSlope = "0.5"
            ds.PixelPaddingValue = 65536 - 4000  # padding follows the stored values (-4000, written unsigned)
            ds.save_as(f)
    vol = load_study(tmp_path).volume
    assert vol.array.dtype == np.float32  # slope 0.5 is not integral
    assert np.array_equal(vol.array[3], base.array[3].astype(np.float32) + 24)
    assert np.array_equal(vol.array[9], base.array[9].astype(np.float32))
    others = [k for k in range(16) if k not in (3, 9)]
    assert np.array_equal(vol.array[others], base.array[others].astype(np.float32))


def test_localizer_and_secondary_capture_excluded(tmp_path):
    for f in LIDC.glob("*.dcm"):
        shutil.copyfile(f, tmp_path / f.name)
    ds = pydicom.dcmread(LIDC / "IM0001.dcm")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "scout.dcm")
    ds = pydicom.dcmread(LIDC / "IM0002.dcm")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid()
    ds.ImagePositionPatient = [0, 0, 500]
    ds.save_as(tmp_path / "screenshot.dcm")
    res = load_study(tmp_path)
    assert res.volume.array.shape[0] == 16
    assert res.selected.images == 18 and res.selected.slices == 16
    w = " ".join(res.selected.warnings)
    assert "1 localizer" in w and "1 secondary capture" in w
    assert res.measurement_grade


def test_duplicate_copy_dropped(tmp_path):
    for f in LIDC.glob("*.dcm"):
        shutil.copyfile(f, tmp_path / f.name)
    shutil.copyfile(LIDC / "IM0005.dcm", tmp_path / "copy-of-5")
    res = load_study(tmp_path)
    assert res.volume.array.shape[0] == 16
    assert any("duplicate copies" in w for w in res.volume.warnings)


def test_missing_slice_is_detected_and_not_measurement_grade(tmp_path):
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: _ipp(f)[2])
    removed = files[7]
    for f in files:
        if f != removed:
            shutil.copyfile(f, tmp_path / f.name)
    res = load_study(tmp_path)
    vol = res.volume
    assert vol.spacing_mm[2] == pytest.approx(2.5)
    assert vol.array.shape[0] == 16  # the missing position is interpolated, not squeezed out
    assert vol.metadata["resampled"] and vol.metadata["interpolated"].count(True) == 1
    assert not res.measurement_grade
    assert any("missing slice" in w for w in vol.warnings)
    # every kept slice still sits at its own position
    for k, uid in enumerate(vol.sop_instance_uids):
        if not vol.metadata["interpolated"][k]:
            src = next(f for f in files if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == uid)
            assert np.allclose(vol.voxel_to_mm([0, 0, k]), _ipp(src), atol=1e-3)


def test_uneven_gaps_refused_when_configured(tmp_path):
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: _ipp(f)[2])
    for f in files[:5] + files[6:]:
        shutil.copyfile(f, tmp_path / f.name)
    cfg = default_ingest_config().model_copy(deep=True)
    cfg.geometry.non_uniform = "refuse"
    with pytest.raises(GeometryError, match="uneven slice gaps"):
        load_study(tmp_path, config=cfg)


# --------------------------------------------------------------------------------- gantry tilt

def test_gantry_tilt_is_corrected_never_uniform(tmp_path):
    files = sorted(TILT.glob("*.dcm"))
    marks = {}
    for n, f in enumerate(files):
        ds = pydicom.dcmread(f)
        if n in (2, 25):  # a bright marker in an early and a late slice
            arr = ds.pixel_array.copy()
            arr[39:42, 49:52] = 3000  # 3x3 block: its centre survives bilinear resampling
            ds.PixelData = arr.tobytes()
            iop = np.array([float(x) for x in ds.ImageOrientationPatient])
            sy, sx = (float(x) for x in ds.PixelSpacing)
            marks[n] = _ipp(f) + 50 * sx * iop[:3] + 40 * sy * iop[3:]
        ds.save_as(tmp_path / f.name)
    res = load_study(tmp_path)
    vol = res.volume
    assert vol.metadata["resampled"] and res.selected.tilt_deg == pytest.approx(18.5, abs=0.2)
    assert not res.measurement_grade
    assert any("gantry tilt" in w for w in vol.warnings)
    normal = np.cross(vol.direction[:, 0], vol.direction[:, 1])
    assert np.allclose(vol.direction[:, 2], normal, atol=1e-6)
    ipp0 = _ipp(files[0])
    for n, pos in marks.items():
        # the brightest voxel of the output slice nearest the marker must be the marker, in the right place
        kk = int(round(float(vol.mm_to_voxel(pos)[2])))
        sl = vol.array[kk]
        j, i = np.unravel_index(int(np.argmax(sl)), sl.shape)
        assert sl[j, i] > 1000
        err = vol.voxel_to_mm([i, j, kk]) - pos
        along = float(err @ normal)
        assert np.linalg.norm(err - along * normal) < 0.75, (n, err)  # in-plane: within a pixel
        assert abs(along) <= vol.spacing_mm[2] / 2 + 1e-3  # through-plane: nearest grid slice
    # a stack treated as uniform would put the late marker where slice 0's in-plane origin says: far off
    drift = (_ipp(files[25]) - ipp0) - ((_ipp(files[25]) - ipp0) @ normal) * normal
    assert np.linalg.norm(drift) > 20


def test_gantry_tilt_refused_when_configured():
    cfg = default_ingest_config().model_copy(deep=True)
    cfg.geometry.tilt = "refuse"
    with pytest.raises(GeometryError, match="gantry tilt"):
        load_study(TILT, config=cfg)


# ------------------------------------------------------------------------------------ selection

def test_lung_kernel_selected_and_series_override():
    res = load_study(KERNELS)
    assert len(res.series) == 2
    assert res.selected.kernel == "L" and res.selected.lung_kernel
    assert "lung kernel" in res.selected.selection_reason
    other = next(s for s in res.series if not s.selected)
    assert other.kernel == "B" and "not a lung kernel" in other.selection_reason
    forced = load_study(KERNELS, series_uid=other.series_uid)
    assert forced.selected.kernel == "B" and forced.volume.series_uid == other.series_uid
    assert "--series" in forced.selected.selection_reason
    with pytest.raises(IngestError, match="not found"):
        load_study(KERNELS, series_uid="1.2.3.4")


def test_thinnest_slices_win_over_kernel(tmp_path):
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: _ipp(f)[2])
    series_uid = generate_uid()
    for f in files:
        shutil.copyfile(f, tmp_path / f.name)
    for n, f in enumerate(files[::2]):  # a second reconstruction: 5 mm, lung kernel
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.ConvolutionKernel = "LUNG"
        ds.SeriesNumber = 1
        ds.save_as(tmp_path / f"thick{n}.dcm")
    res = load_study(tmp_path)
    assert res.selected.kernel == "STANDARD" and res.selected.spacing_mm[2] == pytest.approx(2.5)
    thick = next(s for s in res.series if s.series_uid == series_uid)
    assert thick.spacing_mm[2] == pytest.approx(5.0) and "thicker slices" in thick.selection_reason


# ------------------------------------------------------------------------------- stripped header

def test_stripped_header_jpeg2000_series_loads_with_stable_uids():
    a = load_study(STRIPPED)
    b = load_study(STRIPPED)
    assert a.volume.array.shape == (4, 512, 512)
    assert a.volume.spacing_mm[2] == pytest.approx(2.0)
    assert {"SeriesInstanceUID", "StudyInstanceUID"} <= set(a.selected.uids_derived)
    assert a.volume.series_uid == b.volume.series_uid and a.volume.study_uid == b.volume.study_uid
    assert UID(a.volume.series_uid).is_valid
    assert all(u and u.startswith("1.3.12.2.1107") for u in a.volume.sop_instance_uids)
    assert any("overlapping slices" in w for w in a.volume.warnings)


# ------------------------------------------------------------------------------------ other input

def test_nifti_roundtrip_keeps_lps_geometry(tmp_path):
    vol = load_study(LIDC).volume
    img = sitk.GetImageFromArray(vol.array)
    img.SetSpacing(vol.spacing_mm)
    img.SetOrigin(vol.origin_mm)
    img.SetDirection(vol.direction.flatten().tolist())
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = tmp_path / f"v{suffix}"
        sitk.WriteImage(img, str(path))
        back = read_volume(path)
        assert np.array_equal(back.array, vol.array)
        assert np.allclose(back.spacing_mm, vol.spacing_mm) and np.allclose(back.origin_mm, vol.origin_mm, atol=1e-4)
        assert np.allclose(back.direction, vol.direction)
    import nibabel as nib

    ras = nib.load(str(tmp_path / "v.nii.gz")).affine  # NIfTI stores RAS
    assert np.allclose(np.diag([-1, -1, 1, 1]) @ ras, vol.affine_lps, atol=1e-4)


def test_bad_inputs_give_typed_errors(tmp_path):
    with pytest.raises(IngestError, match="cannot open"):
        load_study(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no DICOM images"):
        load_study(tmp_path / "empty")
    (tmp_path / "r.txt").write_text("hello")
    with pytest.raises(IngestError, match="not DICOM"):
        load_study(tmp_path / "r.txt")
    data = (TS / "CTImage.dcm").read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError):
        load_study(tmp_path / "trunc.dcm")
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(IngestError):
        load_study(tmp_path / "bad.nii.gz")


def test_limits_refuse_large_inputs():
    with pytest.raises(InputTooLargeError, match="max_voxels"):
        load_study(LIDC, limits=IngestLimits(max_voxels=96 * 96 * 10))
    with pytest.raises(InputTooLargeError, match="more than 5 files"):
        load_study(LIDC, limits=IngestLimits(max_files=5))


def test_summary_has_design_fields():
    s = load_study(KERNELS).summary()
    for key in ("series_uid", "study_uid", "modality", "rows", "cols", "slices", "spacing_mm", "orientation",
                "transfer_syntax", "warnings"):
        assert key in s["selected"], key
        assert all(key in x for x in s["series"])
    assert s["selected"]["rows"] == 64 and s["selected"]["slices"] == 4
    assert s["volume"]["frame"] == "LPS" and s["volume"]["measurement_grade"] is True


def test_config_file_is_valid():
    cfg = default_ingest_config()
    assert isinstance(cfg, IngestConfig)
    assert "1.2.840.10008.1.2.4.91" in cfg.pixels.lossy_transfer_syntaxes


def test_deflate_bomb_inside_dicom_is_not_inflated(tmp_path):
    ds = pydicom.dcmread(TS / "CTImage.dcm")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.add_new(0x00091010, "OB", bytes(24 << 20))  # 24 MiB of zeros in a private element
    ds.save_as(tmp_path / "bomb.dcm")
    assert (tmp_path / "bomb.dcm").stat().st_size < 1 << 20
    with pytest.raises(IngestError, match="bomb guard"):
        load_study(tmp_path / "bomb.dcm", limits=IngestLimits(max_file_bytes=8 << 20))


def test_wide_gap_is_not_invented(tmp_path):
    """Two slabs 20 mm apart in one series: the grid slices between them hold no-data, not interpolation."""
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: _ipp(f)[2])
    for f in files[:4] + files[12:]:  # 8 slices missing: a 22.5 mm gap
        shutil.copyfile(f, tmp_path / f.name)
    res = load_study(tmp_path)
    vol = res.volume
    fill = default_ingest_config().pixels.padding_fill_hu
    assert vol.array.shape[0] == 16 and not res.measurement_grade
    inside = [k for k in range(16) if vol.metadata["interpolated"][k]]
    assert len(inside) == 8 and all(np.all(vol.array[k] == fill) for k in inside)
    assert any("not interpolated" in w for w in vol.warnings)


def test_repeated_acquisition_in_one_series_is_not_mixed(tmp_path):
    """A second acquisition at the same positions (e.g. a repeat scan) shares the SeriesInstanceUID."""
    files = sorted(LIDC.glob("*.dcm"), key=lambda f: _ipp(f)[2])
    for f in files:
        shutil.copyfile(f, tmp_path / f.name)
    for n, f in enumerate(files[:10]):
        ds = pydicom.dcmread(f)
        ds.AcquisitionNumber = 2
        ds.InstanceNumber = 1 + n  # lower numbers than acquisition 1: a naive rule would mix them in
        ds.SOPInstanceUID = generate_uid()
        arr = ds.pixel_array.copy()
        arr[:] = 0
        ds.PixelData = arr.tobytes()
        ds.save_as(tmp_path / f"acq2-{n}.dcm")
    res = load_study(tmp_path)
    base = load_study(LIDC).volume
    assert np.array_equal(res.volume.array, base.array)
    assert any("acquisitions share slice positions" in w for w in res.volume.warnings)


def _records_equal(a, b) -> bool:
    from dataclasses import fields

    from pipelines.ingest_dicom import SkippedFile

    if isinstance(a, SkippedFile) or isinstance(b, SkippedFile):
        return type(a) is type(b) and a.reason == b.reason
    if len(a) != len(b):
        return False
    for ra, rb in zip(a, b):
        for f in fields(ra):
            va, vb = getattr(ra, f.name), getattr(rb, f.name)
            if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                if not np.array_equal(va, vb):
                    return False
            elif va != vb:
                return False
    return True


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on malformed files
def test_fast_header_walk_matches_pydicom_on_the_subset():
    from pipelines.ingest_dicom import scan_file

    cfg = default_ingest_config()
    files = [p for p in sorted(DATA.rglob("*")) if p.is_file()]
    assert len(files) > 60
    for p in files:
        assert _records_equal(scan_file(p, DATA, cfg, fast=True), scan_file(p, DATA, cfg, fast=False)), p


def test_cli_series_override_and_json_file(tmp_path, capsys):
    from serving.cli import main

    out = tmp_path / "s.json"
    assert main(["ingest", str(KERNELS), "--json", str(out)]) == 0
    import json

    summary = json.loads(out.read_text())
    soft = next(s for s in summary["series"] if s["kernel"] == "B")
    assert main(["ingest", str(KERNELS), "--series", soft["series_uid"], "--json", "-"]) == 0
    forced = json.loads(capsys.readouterr().out)
    assert forced["series_uid"] == soft["series_uid"] and forced["selected"]["kernel"] == "B"
    assert main(["ingest", str(KERNELS), "--series", "9.9.9", "--json", "-"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: IngestError: series 9.9.9 not found") and err.count("\n") == 1
