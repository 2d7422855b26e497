"""``preread measure --image IMG --mask MASK --json -``: measure every lesion of a mask.

One entry per connected component of a binary mask, or per label value of a label map
(see :func:`pipelines.measure.measure_labels`). IMG/MASK: NIfTI, NRRD, MHA or a DICOM series folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("measure")
    def measure_cmd(
        image: Path = typer.Option(..., "--image", help="CT image: NIfTI, NRRD, MHA, or a DICOM series folder."),
        mask: Path = typer.Option(..., "--mask", help="Lesion mask or label map on the image's voxel grid."),
        json_path: str = typer.Option("-", "--json", help="Write JSON here ('-' = stdout)."),
        plane: str = typer.Option("axial", "--plane", help="Plane of the long/short axes: axial, coronal, sagittal."),
        lobes: Path | None = typer.Option(None, "--lobes", help="Lobe label map (1 RUL, 2 RML, 3 RLL, 4 LUL, 5 LLL)."),
        lungs: Path | None = typer.Option(None, "--lungs", help="Lung mask (any non-zero = lung), for the side."),
        connectivity: int = typer.Option(26, "--connectivity", help="Neighbourhood of a binary mask: 6, 18 or 26."),
        mask_only: bool = typer.Option(False, "--mask-only", help="Ignore the image's HU at the boundary."),
    ) -> None:
        """Measure each lesion in MASK: axes, mean diameter, volume, composition, location, uncertainty."""
        from pipelines.measure import measure_labels
        from pipelines.measure_io import read_image, read_mask_for

        t0 = time.perf_counter()
        vol = read_image(image)
        labels = read_mask_for(vol, mask)
        lobe_labels = read_mask_for(vol, lobes) if lobes else None
        lung_labels = read_mask_for(vol, lungs) if lungs else None
        lesions = measure_labels(vol, labels, connectivity=connectivity, plane=plane, lobe_labels=lobe_labels,
                                 lung_labels=lung_labels, use_image=not mask_only)
        write_json({
            "image": {"path": str(image), "shape_kji": list(vol.array.shape), "spacing_mm": list(vol.spacing_mm),
                      "series_uid": vol.series_uid, "warnings": list(vol.warnings)},
            "mask": str(mask),
            "plane": plane,
            "lesions": [m.model_dump(mode="json") for m in lesions],
            "timings_s": {"total": round(time.perf_counter() - t0, 3)},
        }, json_path)
