"""The whole real corpus in ../shared/data through ``preread ingest`` (skipped when it is absent).

Every file and folder under data/dicom and data/ct: a JSON summary and exit 0, or one typed error line
and exit 2; never a traceback, never exit 1. The walk runs in-process (the CLI's ``main``) for speed; a
few inputs go through a real subprocess for the command-line contract.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import GeometryError, IngestError
from pipelines.ingest import load_study, read_volume
from pipelines.ingest_config import default_ingest_config
from serving.cli import main

pytestmark = pytest.mark.shared_data

LOSSLESS_TS = ["1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80",
               "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2",
               "1.2.840.10008.1.2.5"]
LOSSY_TS = ["1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"]
RETIRED_TS = ["1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"]


def _corpus(shared: Path) -> list[Path]:
    paths = []
    for top in (shared / "dicom", shared / "ct"):
        for dp, _dn, fn in os.walk(top):
            paths.append(Path(dp))
            paths.extend(Path(dp) / f for f in fn)
    return sorted(set(paths))


def _ts_file(shared: Path, uid: str) -> Path:
    hits = [p for p in (shared / "dicom" / "transfer-syntaxes").glob("CTImage.dcm_*") if p.name.endswith(f"_{uid}.dcm")]
    assert len(hits) == 1, uid
    return hits[0]


def test_every_corpus_file_and_folder_gives_summary_or_typed_error(shared_data):
    paths = _corpus(shared_data)
    assert len(paths) > 550
    codes = {0: 0, 2: 0}
    for p in paths:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["ingest", str(p), "--json", "-"])
        e = err.getvalue()
        assert rc in (0, 2), f"{p}: exit {rc}: {e}"
        assert "Traceback" not in e, p
        if rc == 0:
            summary = json.loads(out.getvalue())
            assert summary["selected"]["slices"] >= 1 and len(summary["selected"]["spacing_mm"]) == 3
            assert all(s > 0 for s in summary["volume"]["spacing_mm"])
        else:
            assert e.startswith("error: ") and e.count("\n") == 1, f"{p}: {e!r}"
            assert "Error: " in e  # the typed error's name
        codes[rc] += 1
    assert codes[0] > 100 and codes[2] > 100


def test_cli_subprocess_contract(shared_data):
    cmd = [sys.executable, "-c", "from serving.cli import run; run()", "ingest"]
    ok = subprocess.run(cmd + [str(shared_data / "ct" / "lidc-idri-0002"), "--json", "-"], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["selected"]["spacing_mm"][2] == pytest.approx(1.25)
    for bad in (_ts_file(shared_data, "1.2.840.10008.1.2.4.53"),):  # the rest of the corpus runs in-process
        proc = subprocess.run(cmd + [str(bad), "--json", "-"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, (bad, proc.stderr)
        assert proc.stderr.startswith("error: IngestError") and proc.stderr.count("\n") == 1
        assert proc.stdout == ""


def test_transfer_syntaxes(shared_data):
    ref = load_study(shared_data / "dicom" / "transfer-syntaxes" / "CTImage.dcm").volume.array
    for uid in LOSSLESS_TS:
        res = load_study(_ts_file(shared_data, uid))
        assert np.array_equal(res.volume.array, ref), uid
        assert not res.selected.lossy, uid
    for uid in LOSSY_TS:
        res = load_study(_ts_file(shared_data, uid))
        assert res.selected.lossy and any("lossy" in w for w in res.volume.warnings), uid
        assert not np.array_equal(res.volume.array, ref), uid
    for uid in RETIRED_TS:
        with pytest.raises(IngestError, match=f"{uid.replace('.', '[.]')}.*cannot be decoded"):
            load_study(_ts_file(shared_data, uid))


@pytest.mark.parametrize("case,n,dz", [("lidc-idri-0001", 16, 2.5), ("lidc-idri-0002", 12, 1.25),
                                       ("lidc-idri-0003", 11, 2.5)])
def test_lidc_slabs_sorted_with_spacing(shared_data, case, n, dz):
    res = load_study(shared_data / "ct" / case)
    vol = res.volume
    assert vol.array.shape == (n, 512, 512)
    assert vol.spacing_mm[2] == pytest.approx(dz)
    assert not vol.metadata["resampled"] and res.measurement_grade
    z = [vol.voxel_to_mm([0, 0, k])[2] for k in range(n)]
    assert np.allclose(np.diff(z), dz)
    assert vol.array.min() >= -2048 and vol.array.max() < 4000  # HU, padding replaced


def test_lung_pet_ct_dx_selects_lung_kernel(shared_data):
    res = load_study(shared_data / "ct" / "lung-pet-ct-dx-a0001")
    assert len(res.series) == 2
    assert res.selected.kernel == "L" and res.selected.slices == 64
    assert res.volume.array.shape == (64, 512, 512) and res.volume.spacing_mm[2] == pytest.approx(5.0)
    other = next(s for s in res.series if not s.selected)
    assert other.kernel == "B" and "not a lung kernel" in other.selection_reason
    # the tumour boxes are named by SOPInstanceUIDs of either reconstruction: the two volumes hold them all
    soft = load_study(shared_data / "ct" / "lung-pet-ct-dx-a0001", series_uid=other.series_uid).volume
    boxes = {p.stem for p in (shared_data / "ct" / "lung-pet-ct-dx-a0001" / "tumour-boxes").glob("*.xml")}
    assert boxes and boxes <= set(res.volume.sop_instance_uids) | set(soft.sop_instance_uids)


def test_gantry_tilt_head_ct_never_uniform(shared_data):
    path = shared_data / "ct" / "ge-head-ct-gantry-tilt"
    res = load_study(path)
    vol = res.volume
    assert vol.metadata["resampled"] and not res.measurement_grade
    assert res.selected.tilt_deg == pytest.approx(18.5, abs=0.2)
    assert vol.array.shape[1] > 512  # grid enlarged to keep every sheared pixel
    cfg = default_ingest_config().model_copy(deep=True)
    cfg.geometry.tilt = "refuse"
    with pytest.raises(GeometryError, match="gantry tilt"):
        load_study(path, config=cfg)


def test_stripped_header_series_loads(shared_data):
    res = load_study(shared_data / "ct" / "totalsegmentator-examples" / "dicom-jp2k-stripped-header")
    assert res.volume.array.shape == (20, 512, 512)
    assert res.volume.spacing_mm[2] == pytest.approx(2.0)
    assert "SeriesInstanceUID" in res.selected.uids_derived and res.measurement_grade


def test_enhanced_ct_multiframe(shared_data):
    res = load_study(shared_data / "dicom" / "pydicom-data" / "eCT_Supplemental.dcm")
    assert res.input_kind == "enhanced-ct"
    assert res.volume.array.shape[0] == 2 and res.volume.metadata["frame_numbers"] is not None
    assert sorted(res.volume.metadata["frame_numbers"]) == [1, 2]


def test_nifti_example_in_lps(shared_data):
    import nibabel as nib

    path = shared_data / "ct" / "totalsegmentator-examples" / "example_ct_sm.nii.gz"
    vol = read_volume(path)
    ras = nib.load(str(path)).affine
    assert np.allclose(np.diag([-1, -1, 1, 1]) @ ras, vol.affine_lps, atol=1e-3)
    assert vol.array.shape[::-1] == nib.load(str(path)).shape[:3]


def test_j2k_signedness_mismatch_gives_same_hu(shared_data):
    """pylibjpeg-data: the same slice with a signed codestream in an unsigned header, and the reverse."""
    d = shared_data / "dicom" / "pylibjpeg-data" / "JPEG2000Lossless"
    a = load_study(d / "TOSHIBA_J2K_SIZ1_PixRep0.dcm")
    b = load_study(d / "TOSHIBA_J2K_SIZ0_PixRep1.dcm")
    assert np.array_equal(a.volume.array, b.volume.array)
    assert a.volume.array.min() == -2048
    assert any("codestream is signed" in w for w in a.volume.warnings)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on malformed files
def test_fast_header_walk_matches_pydicom_on_the_corpus(shared_data):
    from test_ingest import _records_equal

    from pipelines.ingest_dicom import scan_file

    cfg = default_ingest_config()
    files = [p for p in _corpus(shared_data) if p.is_file()]
    diffs = [p for p in files if not _records_equal(scan_file(p, shared_data, cfg, fast=True),
                                                    scan_file(p, shared_data, cfg, fast=False))]
    assert diffs == []
