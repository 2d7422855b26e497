"""Reading an image and its lesion mask for measurement (NIfTI, NRRD, MHA, or a DICOM series).

NIfTI / NRRD / MHA are read with SimpleITK, which reports geometry in LPS (it converts NIfTI's RAS).
A DICOM series (folder or one file of it) goes through ``pipelines.ingest.read_volume`` when that module
is present, and through SimpleITK's ImageSeriesReader otherwise.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import numpy as np

from pipelines.errors import IngestError, MeasureError, PrereadError
from pipelines.types import Volume

log = logging.getLogger(__name__)

_ITK_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def _is_itk_file(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in _ITK_SUFFIXES)


def _from_sitk(img) -> Volume:
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise IngestError(f"expected a 3-D image, got {img.GetDimension()}-D",
                          hint="give a volume, not a single slice or a time series")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise IngestError("expected a scalar image, got a multi-component (vector/RGB) one")
    arr = sitk.GetArrayFromImage(img)  # [k, j, i]
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)  # columns: axes i, j, k in LPS
    return Volume(array=arr, spacing_mm=tuple(img.GetSpacing()), origin_mm=tuple(img.GetOrigin()),
                  direction=direction)


def _read_dicom_sitk(path: Path) -> Volume:
    import SimpleITK as sitk

    folder = path if path.is_dir() else path.parent
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise IngestError(f"no DICOM series found in {folder}")
    if len(series) > 1:
        log.warning("%d DICOM series in the folder; measuring the first", len(series))
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    img = reader.Execute()
    vol = _from_sitk(img)
    inst: list[int | None] = []
    sops: list[str | None] = []
    for n in range(len(files)):
        try:
            inst.append(int(reader.GetMetaData(n, "0020|0013").strip()))
        except (RuntimeError, ValueError):
            inst.append(None)
        try:
            sops.append(reader.GetMetaData(n, "0008|0018").strip())
        except RuntimeError:
            sops.append(None)
    vol.instance_numbers = inst
    vol.sop_instance_uids = sops
    return vol


def read_image(path: str | Path) -> Volume:
    """Read a volume (HU for CT) with its geometry from NIfTI, NRRD, MHA or a DICOM series."""
    p = Path(path)
    if not p.exists():
        raise IngestError(f"no such file or folder: {p}")
    if p.is_file() and _is_itk_file(p):
        import SimpleITK as sitk

        try:
            img = sitk.ReadImage(str(p))
        except RuntimeError as ex:
            raise IngestError(f"cannot read {p.name} as an image: {' '.join(str(ex).split())[:200]}") from ex
        return _from_sitk(img)
    try:
        ingest = importlib.import_module("pipelines.ingest")
        read_volume = getattr(ingest, "read_volume", None)
    except ImportError:
        read_volume = None
    if read_volume is not None:
        return read_volume(p)
    try:
        return _read_dicom_sitk(p)
    except PrereadError:
        raise
    except RuntimeError as ex:
        raise IngestError(f"cannot read {p} as a DICOM series: {' '.join(str(ex).split())[:200]}",
                          hint="give a NIfTI/NRRD/MHA file or a folder of DICOM slices") from ex


def read_mask_for(image: Volume, path: str | Path, *, atol_mm: float = 1e-3) -> np.ndarray:
    """Read a mask or label map and check it lies on ``image``'s voxel grid (shape, spacing, origin, direction)."""
    m = read_image(path)
    if m.array.shape != image.array.shape:
        raise MeasureError(f"mask shape {m.array.shape} (k, j, i) differs from the image's {image.array.shape}",
                           hint="the mask must be on the image's voxel grid; resample it first")
    tol = max(atol_mm, 1e-3 * max(image.spacing_mm))
    if not (np.allclose(m.spacing_mm, image.spacing_mm, atol=tol) and np.allclose(m.origin_mm, image.origin_mm, atol=10 * tol)
            and np.allclose(m.direction, image.direction, atol=1e-3)):
        raise MeasureError(
            f"mask geometry differs from the image's (spacing {m.spacing_mm} vs {image.spacing_mm}, "
            f"origin {tuple(round(o, 2) for o in m.origin_mm)} vs {tuple(round(o, 2) for o in image.origin_mm)})",
            hint="the mask must be on the image's voxel grid; resample it first")
    return m.array
