"""Rebuild this folder's small real-data subset from ../shared/data (see ATTRIBUTION.md).

Run from the repository root: ``python tests/data/ingest/make_subset.py``. Cropped slices keep every
header element except Rows, Columns, PixelData and ImagePositionPatient, which is moved to the centre of
the crop's first voxel (IPP + i0 * col_spacing * row_cosine + j0 * row_spacing * column_cosine), so the
geometry stays exact. Compressed files are copied unchanged.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[3] / "shared" / "data"


def crop(src: Path, dst: Path, size: int, centre: tuple[int, int] | None = None) -> None:
    ds = pydicom.dcmread(src)
    arr = ds.pixel_array
    rows, cols = arr.shape
    cj, ci = centre or (rows // 2, cols // 2)
    j0, i0 = max(0, cj - size // 2), max(0, ci - size // 2)
    sub = np.ascontiguousarray(arr[j0:j0 + size, i0:i0 + size])
    iop = np.array([float(x) for x in ds.ImageOrientationPatient])
    sy, sx = (float(x) for x in ds.PixelSpacing)
    ipp = np.array([float(x) for x in ds.ImagePositionPatient]) + i0 * sx * iop[:3] + j0 * sy * iop[3:]
    ds.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
    ds.Rows, ds.Columns = sub.shape
    ds.PixelData = sub.tobytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=False)


def main() -> int:
    if not SHARED.is_dir():
        print(f"{SHARED} not found", file=sys.stderr)
        return 1
    ts = SHARED / "dicom" / "transfer-syntaxes"
    out = HERE / "transfer-syntaxes"
    out.mkdir(exist_ok=True)
    for name in ["CTImage.dcm",
                 "CTImage.dcm_RLELosslessTransferSyntax_1.2.840.10008.1.2.5.dcm",
                 "CTImage.dcm_JPEGLSLosslessTransferSyntax_1.2.840.10008.1.2.4.80.dcm",
                 "CTImage.dcm_JPEG2000LosslessOnlyTransferSyntax_1.2.840.10008.1.2.4.90.dcm",
                 "CTImage.dcm_JPEG2000TransferSyntax_1.2.840.10008.1.2.4.91.dcm",
                 "CTImage.dcm_JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm"]:
        shutil.copyfile(ts / name, out / name)
    for f in sorted((SHARED / "ct" / "lidc-idri-0001").glob("*.dcm")):
        crop(f, HERE / "lidc-idri-0001-crop" / f.name, 96, centre=(300, 330))
    for f in sorted((SHARED / "ct" / "ge-head-ct-gantry-tilt").glob("*.dcm")):
        crop(f, HERE / "gantry-tilt-crop" / f.name, 96)
    for series in ("series-2-lung-kernel", "series-3-soft-kernel"):
        for f in sorted((SHARED / "ct" / "lung-pet-ct-dx-a0001" / series).glob("*.dcm"))[30:34]:
            crop(f, HERE / "lung-pet-ct-dx-a0001-crop" / series / f.name, 64)
    stripped = sorted((SHARED / "ct" / "totalsegmentator-examples" / "dicom-jp2k-stripped-header").iterdir())
    for f in stripped[:4]:
        dst = HERE / "jp2k-stripped-header" / f.name
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(f, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
