"""Zip input: a real series in a zip loads like its folder; crafted unsafe zips are refused, nothing escapes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import UnsafeArchiveError
from pipelines.ingest import load_study
from pipelines.ingest_config import ArchiveLimits, IngestLimits

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
LIDC = DATA / "lidc-idri-0001-crop"


def _zip_series(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, f in enumerate(sorted(LIDC.glob("*.dcm"))):
            zf.write(f, f"study/series {n % 2}/{f.stem}")  # nested, no suffix
        zf.writestr("study/README.txt", "not an image")
    return path


def _cli(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, TMPDIR=str(tmp))
    return subprocess.run([sys.executable, "-c", "from serving.cli import run; run()", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_zip_of_series_loads_like_the_folder(tmp_path):
    zpath = _zip_series(tmp_path / "study.zip")
    folder = load_study(LIDC).volume
    with load_study(zpath) as res:
        assert res.input_kind == "zip"
        assert np.array_equal(res.volume.array, folder.array)
        assert res.volume.sop_instance_uids == folder.sop_instance_uids
        assert all(p.exists() for p in res.source_files)  # kept for DICOM output until close()
        extracted = res.source_files[0]
    assert not extracted.exists()  # the temporary extraction folder is gone


def test_zip_into_given_workdir(tmp_path):
    zpath = _zip_series(tmp_path / "study.zip")
    res = load_study(zpath, workdir=tmp_path / "work")
    assert all(tmp_path / "work" in p.parents for p in res.source_files)


@pytest.mark.parametrize("name", ["../evil.dcm", "/tmp/evil-abs.dcm", "a/../../evil.dcm", "..\\evil.dcm",
                                  "C:/evil.dcm"])
def test_path_traversal_refused(tmp_path, name):
    zpath = tmp_path / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(LIDC / "IM0001.dcm", "ok/IM0001.dcm")
        zf.writestr(name, b"x")
    work = tmp_path / "nested" / "work"
    with pytest.raises(UnsafeArchiveError):
        load_study(zpath, workdir=work)
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path / "nested" / "evil.dcm").exists()
    assert not Path("/tmp/evil-abs.dcm").exists()
    assert not work.exists()  # nothing left behind either


def test_symlink_entry_refused(tmp_path):
    zpath = tmp_path / "link.zip"
    info = zipfile.ZipInfo("study/passwd")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        load_study(zpath, workdir=tmp_path / "w")


def test_zip_bomb_refused(tmp_path):
    zpath = tmp_path / "bomb.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("study/zeros.dcm", bytes(64 << 20))  # 64 MiB of zeros compress ~1000x
    assert zpath.stat().st_size < 1 << 20
    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        load_study(zpath, workdir=tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_too_many_entries_refused(tmp_path):
    zpath = _zip_series(tmp_path / "study.zip")
    lim = IngestLimits(archive=ArchiveLimits(max_entries=5))
    with pytest.raises(UnsafeArchiveError, match="entries"):
        load_study(zpath, limits=lim)


def test_total_size_limit_refused(tmp_path):
    zpath = _zip_series(tmp_path / "study.zip")
    lim = IngestLimits(archive=ArchiveLimits(max_total_bytes=100_000))  # the series is ~330 kB
    with pytest.raises(UnsafeArchiveError, match="limit"):
        load_study(zpath, limits=lim)


def test_cli_refuses_bad_zips_with_exit_2_and_writes_nothing(tmp_path):
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", bytes(64 << 20))
    trav = tmp_path / "trav.zip"
    with zipfile.ZipFile(trav, "w") as zf:
        zf.write(LIDC / "IM0001.dcm", "IM0001.dcm")
        zf.writestr("../../escaped.txt", b"x")
    for z in (bomb, trav):
        proc = _cli(["ingest", str(z), "--json", "-"], tmp)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("error: UnsafeArchiveError") and proc.stderr.count("\n") == 1
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert list(tmp.iterdir()) == []  # temporary extraction folders removed
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    good = _zip_series(tmp_path / "good.zip")
    proc = _cli(["ingest", str(good), "--json", "-"], tmp)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["selected"]["slices"] == 16
    assert list(tmp.iterdir()) == []
