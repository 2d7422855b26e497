"""Write a synthetic study: a CT Image Storage series (DICOM PS3.3 A.3, CT Image IOD), NIfTI image and
label maps, the truth JSON and the report text."""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

from pipelines.errors import PrereadError

log = logging.getLogger(__name__)

RESCALE_INTERCEPT = -1024.0


def _ras_affine(volume) -> np.ndarray:
    """NIfTI affine (RAS) for data stored as [i, j, k]."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ volume.affine_lps


def _dicom_date(seed: int) -> tuple[str, str]:
    d = dt.date(2024, 1, 1) + dt.timedelta(days=seed % 700)
    t = f"{8 + seed % 10:02d}{(seed * 7) % 60:02d}{(seed * 13) % 60:02d}"
    return d.strftime("%Y%m%d"), t


def _base_dataset(study, k: int) -> FileDataset:
    vol = study.volume
    meta = vol.metadata
    seed = study.seed
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = CTImageStorage
    fm.MediaStorageSOPInstanceUID = vol.sop_instance_uids[k]
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    fm.ImplementationVersionName = "PREREAD_SYNTH"
    ds = FileDataset(None, {}, file_meta=fm, preamble=b"\0" * 128)
    date, time = _dicom_date(seed)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = vol.sop_instance_uids[k]
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = time
    ds.AcquisitionTime = ds.ContentTime = time
    ds.AccessionNumber = f"SYN{seed:08d}"
    ds.Modality = "CT"
    ds.Manufacturer = meta.get("manufacturer", "preread synthetic")
    ds.InstitutionName = "preread synthetic data"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "LDCT LUNG SCREENING" if meta.get("screening") else "CT CHEST WO CONTRAST"
    ds.SeriesDescription = f"AXIAL {meta.get('slice_thickness_mm', 0):g}mm {meta.get('kernel', '')}".strip()
    ds.ManufacturerModelName = "preread-synth"
    ds.PatientName = f"SYNTHETIC^{seed:06d}"
    ds.PatientID = f"SYN-{seed:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientAge = f"{55 + seed % 25:03d}Y"
    ds.PatientIdentityRemoved = "YES"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = f"{vol.spacing_mm[2]:g}"
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{vol.spacing_mm[0] * vol.array.shape[2]:.1f}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ExposureTime = "500"
    ctdi = float(meta.get("ctdi_vol_mgy", 5.0))
    ds.XRayTubeCurrent = str(int(round(ctdi * 25)))
    ds.Exposure = str(int(round(ctdi * 12.5)))
    ds.CTDIvol = round(ctdi, 2)
    ds.ConvolutionKernel = meta.get("kernel", "STANDARD")
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = vol.study_uid
    ds.SeriesInstanceUID = vol.series_uid
    ds.StudyID = f"{seed % 100000}"
    ds.SeriesNumber = int(meta.get("series_number", 3))
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = int(vol.instance_numbers[k])
    pos = vol.voxel_to_mm([0, 0, k])
    ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
    d = vol.direction
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
    ds.FrameOfReferenceUID = vol.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{pos[2]:.4f}"
    ds.SpacingBetweenSlices = f"{vol.spacing_mm[2]:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(vol.array.shape[1]), int(vol.array.shape[2])
    ds.PixelSpacing = [f"{vol.spacing_mm[1]:g}", f"{vol.spacing_mm[0]:g}"]  # row spacing (y), column spacing (x)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = ["-600", "40"]
    ds.WindowWidth = ["1500", "400"]
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.LossyImageCompression = "00"
    return ds


def write_dicom_series(study, out_dir: Path) -> list[Path]:
    """One file per slice (``IM000001.dcm`` … by InstanceNumber), Explicit VR Little Endian, 12-bit stored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    arr = study.volume.array
    if arr.min() < -1024 or arr.max() > 3071:
        raise PrereadError(f"HU range {arr.min()}..{arr.max()} does not fit 12-bit CT storage")
    stored = (arr.astype(np.int32) - int(RESCALE_INTERCEPT)).astype(np.uint16)
    paths = []
    for k in range(arr.shape[0]):
        ds = _base_dataset(study, k)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        p = out_dir / f"IM{ds.InstanceNumber:06d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def write_nifti(array: np.ndarray, volume, path: Path, dtype) -> None:
    img = nib.Nifti1Image(np.ascontiguousarray(np.transpose(array, (2, 1, 0))).astype(dtype), _ras_affine(volume))
    img.header.set_xyzt_units("mm")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def write_study(study, out_dir, *, dicom: bool = True, nifti: bool = True) -> Path:
    """Write ``out_dir/{dicom/, report.txt, truth.json, image.nii.gz, labels.nii.gz, lungs.nii.gz, lobes.nii.gz}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if dicom:
        write_dicom_series(study, out / "dicom")
    (out / "report.txt").write_text(study.report)
    (out / "truth.json").write_text(json.dumps(study.truth, indent=2) + "\n")
    if nifti:
        vol = study.volume
        write_nifti(vol.array, vol, out / "image.nii.gz", np.int16)
        write_nifti(study.labels, vol, out / "labels.nii.gz", np.int16)
        write_nifti(study.lung_labels, vol, out / "lungs.nii.gz", np.uint8)
        if study.lobe_labels is not None:
            write_nifti(study.lobe_labels, vol, out / "lobes.nii.gz", np.uint8)
    log.info("wrote synthetic study %s", out.name)
    return out


__all__ = ["write_study", "write_dicom_series", "write_nifti"]
