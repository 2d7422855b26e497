"""Speed of reading one uncompressed 512 x 512 x 300 CT series: ours against SimpleITK and MONAI.

The series is built from real slices (LIDC-IDRI-0001 from ../shared/data when present, otherwise the
committed GE slice tests/data/ingest/transfer-syntaxes/CTImage.dcm): each of the 300 files is a real
slice's header and pixels with its own SOPInstanceUID, InstanceNumber and ImagePositionPatient (1 mm
apart), written under shuffled file names to a temporary folder. All readers get the folder and must
find, sort and decode the series into HU:

* ``raw bytes``: just reading every file's bytes (``Path.read_bytes``), the floor for any reader;
* ``preread``: ``pipelines.ingest.load_study`` (header scan, series selection, geometry checks, decode);
* ``SimpleITK``: ``ImageSeriesReader.GetGDCMSeriesFileNames`` + ``ImageSeriesReader.Execute``;
* ``MONAI``: ``LoadImage(reader="PydicomReader")`` on the folder.

After one warm-up each, the readers run in ``--repeat`` interleaved rounds (so background load on a shared
machine hits them alike); medians are compared. The page cache is warm for all (cold-cache reads need
root to drop caches and are not measured). The arrays are checked to be the same HU volume.

    nice -n 10 python benchmarks/ingest.py [--slices 300] [--repeat 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("benchmarks.ingest")


def _sources() -> list[Path]:
    from pipelines.paths import SHARED_DATA_DIR

    lidc = SHARED_DATA_DIR / "ct" / "lidc-idri-0001"
    if lidc.is_dir():
        return sorted(lidc.glob("*.dcm"))
    return [REPO / "tests" / "data" / "ingest" / "transfer-syntaxes" / "CTImage.dcm"]


def build_series(out: Path, n: int, seed: int = 0) -> None:
    """Write ``n`` uncompressed slices 1 mm apart, built from real slices, under shuffled names."""
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    srcs = [pydicom.dcmread(p) for p in _sources()]
    series_uid = generate_uid()
    rng = random.Random(seed)
    names = [f"{rng.getrandbits(48):012x}" for _ in range(n)]
    for k in range(n):
        ds = srcs[k % len(srcs)].copy()
        if ds.file_meta.TransferSyntaxUID != ExplicitVRLittleEndian:
            ds.decompress() if ds.file_meta.TransferSyntaxUID.is_compressed else None
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ipp = [float(x) for x in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [ipp[0], ipp[1], -150.0 + k * 1.0]
        ds.SliceLocation = -150.0 + k * 1.0
        ds.SliceThickness = 1.0
        ds.save_as(out / names[k], enforce_file_format=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/<hardware>)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import monai
    import SimpleITK as sitk
    from monai.transforms import LoadImage

    from benchmarks.hardware import hardware_info, hardware_slug
    from pipelines.ingest import load_study
    from pipelines.ingest_config import default_ingest_config

    hw = hardware_info()
    with tempfile.TemporaryDirectory(prefix="preread-bench-ingest-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build_series(folder, args.slices)
        files = sorted(folder.iterdir())
        total_bytes = sum(f.stat().st_size for f in files)
        log.info("built %d slices (%.1f MB) from %d real slice(s) in %.1f s", len(files), total_bytes / 1e6,
                 len(_sources()), time.perf_counter() - t0)

        def raw_bytes():
            return sum(len(f.read_bytes()) for f in files)

        def ours():
            return load_study(folder).volume.array

        def simpleitk():
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder))
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(names)
            return sitk.GetArrayFromImage(reader.Execute())

        loader = LoadImage(reader="PydicomReader", image_only=True)

        def monai_load():
            return np.asarray(loader(str(folder)))

        readers = {"raw_bytes": raw_bytes, "preread": ours, "simpleitk": simpleitk, "monai": monai_load}
        arrays = {name: fn() for name, fn in readers.items()}  # warm-up, and the arrays to compare
        times: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(args.repeat):  # interleaved rounds: background load hits every reader alike
            for name, fn in readers.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        runs = {}
        for name, ts in times.items():
            runs[name] = {"times_s": [round(t, 4) for t in ts], "best_s": round(min(ts), 4),
                          "median_s": round(statistics.median(ts), 4)}
            log.info("%-10s best %.3f s  median %.3f s", name, min(ts), statistics.median(ts))

    ref = arrays["preread"]
    same_sitk = bool(np.array_equal(ref, arrays["simpleitk"]))
    # MONAI's PydicomReader returns [i, j, k]; ours is [k, j, i]
    m = arrays["monai"]
    m_kji = np.transpose(m, (2, 1, 0)) if m.shape == ref.shape[::-1] else m
    same_monai = bool(m_kji.shape == ref.shape and np.allclose(m_kji, ref))
    med = {k: v["median_s"] for k, v in runs.items()}
    ratios = {
        "simpleitk_over_preread": round(med["simpleitk"] / med["preread"], 2),
        "monai_over_preread": round(med["monai"] / med["preread"], 2),
        "preread_over_raw_bytes": round(med["preread"] / med["raw_bytes"], 2),
    }
    result = {
        "benchmark": "ingest",
        "series": {"slices": args.slices, "rows": 512, "cols": 512, "transfer_syntax": "1.2.840.10008.1.2.1",
                   "bytes": total_bytes, "built_from": [str(p.name) for p in _sources()][:3]},
        "hardware": hw,
        "settings": {"repeat": args.repeat, "decode_threads": default_ingest_config().pixels.decode_threads,
                     "page_cache": "warm", "monai": monai.__version__},
        "runs": runs,
        "ratios_median": ratios,
        "same_hu_as_simpleitk": same_sitk,
        "same_hu_as_monai": same_monai,
    }
    print(f"\n{'reader':<12}{'median s':>10}{'best s':>10}{'x preread':>11}")
    for name in ("raw_bytes", "preread", "simpleitk", "monai"):
        print(f"{name:<12}{med[name]:>10.3f}{runs[name]['best_s']:>10.3f}{med[name] / med['preread']:>11.2f}")
    print(f"SimpleITK / preread = {ratios['simpleitk_over_preread']}x, "
          f"MONAI / preread = {ratios['monai_over_preread']}x, "
          f"preread / raw bytes = {ratios['preread_over_raw_bytes']}x; "
          f"same HU: SimpleITK {same_sitk}, MONAI {same_monai}")
    out_dir = args.out or REPO / "benchmarks" / "results" / hardware_slug(hw)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", out_dir / "ingest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
