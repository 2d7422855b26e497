"""The worklist service under load, on loopback: N concurrent study submissions and M worklist reads.

Starts ``preread serve`` (a fresh SQLite store, ``--workers`` local workers) on a free 127.0.0.1 port, then:
1. submits ``--studies`` uploads at once (the same real DICOM study, each with a different report, so each is
   its own job), counting accepted (202), refused for back-pressure (429) and errors;
2. reads the worklist ``--reads`` times (``--read-concurrency`` at a time) while the workers analyse;
3. waits until every accepted study is done or failed (or ``--finish-timeout``);
4. reads the worklist ``--reads`` times again with the service idle: the baseline for the loaded reads.
Prints accepted / finished / failed / pending / lost (accepted but absent from the store: must be 0) and the
p50/p95 latency of worklist reads loaded vs idle as a ratio; writes
``benchmarks/results/<hardware>/service.json`` with the hardware and versions.

    python benchmarks/service.py [--studies 50] [--reads 500] [--workers 1] [--study ../shared/data/ct/lidc-idri-0003]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from benchmarks.hardware import hardware_info, hardware_slug  # noqa: E402
from pipelines.paths import REPO_ROOT, SHARED_DATA_DIR  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix.lower() == ".dcm":
                zf.write(p, p.name)
    return buf.getvalue()


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


async def _submit_all(base: str, token: str, data: bytes, n: int) -> tuple[list[str], dict, list[float]]:
    statuses: dict[str, int] = {}
    ids: list[str] = []
    lat: list[float] = []
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:
        async def one(i: int):
            report = (f"CT chest. A {4 + (i % 20)} mm solid nodule in the right upper lobe (case {i}). "
                      "No other nodules.")
            t = time.perf_counter()
            r = await client.post("/studies", headers={"Authorization": f"Bearer {token}"},
                                  files={"file": ("study.zip", data, "application/zip")}, data={"report": report})
            lat.append(time.perf_counter() - t)
            statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
            if r.status_code == 202:
                ids.append(r.json()["id"])
        await asyncio.gather(*(one(i) for i in range(n)))
    return ids, statuses, lat


async def _reads(base: str, token: str, n: int, concurrency: int) -> tuple[list[float], int]:
    lat: list[float] = []
    errors = 0
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one():
            nonlocal errors
            async with sem:
                t = time.perf_counter()
                r = await client.get("/worklist", params={"limit": 50},
                                     headers={"Authorization": f"Bearer {token}"})
                lat.append(time.perf_counter() - t)
                errors += r.status_code != 200
        await asyncio.gather(*(one() for _ in range(n)))
    return lat, errors


def _summ(lat: list[float]) -> dict:
    return {"n": len(lat), "p50_ms": round(1000 * _pct(lat, 50), 2) if lat else None,
            "p95_ms": round(1000 * _pct(lat, 95), 2) if lat else None,
            "mean_ms": round(1000 * statistics.fmean(lat), 2) if lat else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=50)
    ap.add_argument("--reads", type=int, default=500)
    ap.add_argument("--read-concurrency", type=int, default=20)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--study", type=Path, default=SHARED_DATA_DIR / "ct" / "lidc-idri-0003")
    ap.add_argument("--finish-timeout", type=float, default=3600.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data folder (store, logs)")
    args = ap.parse_args()
    if not args.study.is_dir():
        print(f"error: study folder {args.study} not found", file=sys.stderr)
        return 2
    hw = hardware_info()
    out = args.out or REPO_ROOT / "benchmarks" / "results" / hardware_slug(hw) / "service.json"
    tmp = Path(tempfile.mkdtemp(prefix="preread-bench-service-"))
    keep = ("PREREAD_MODEL", "PREREAD_BACKEND", "PREREAD_DEVICE")  # the model under test is the caller's choice
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREREAD_") or k in keep}
    env.update({"PREREAD_DATA_DIR": str(tmp / "data"), "PREREAD_WORKERS": str(args.workers),
                "PREREAD_MAX_QUEUE": str(max(200, args.studies * 2)), "PREREAD_POLL_S": "0.5",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    cli = [sys.executable, "-c", "from serving.cli import run; run()"]
    tokens = {role: subprocess.run(cli + ["token", "create", "--role", role], env=env, capture_output=True,
                                   text=True, check=True).stdout.strip() for role in ("reader", "submitter")}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp / "serve.log", "w")
    server = subprocess.Popen(cli + ["serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() - t0 > 120:
                print("error: preread serve did not start; see " + str(tmp / "serve.log"), file=sys.stderr)
                args.keep = True
                return 1
            time.sleep(0.5)
        data = _zip(args.study)
        t_sub = time.perf_counter()
        ids, statuses, sub_lat = asyncio.run(_submit_all(base, tokens["submitter"], data, args.studies))
        sub_wall = time.perf_counter() - t_sub
        loaded, loaded_err = asyncio.run(_reads(base, tokens["reader"], args.reads, args.read_concurrency))
        t_fin = time.perf_counter()
        states: dict[str, str] = {}
        while True:
            with httpx.Client(base_url=base, timeout=30) as c:
                for i in ids:
                    if states.get(i) in ("done", "failed"):
                        continue
                    r = c.get(f"/studies/{i}", headers={"Authorization": f"Bearer {tokens['reader']}"})
                    states[i] = r.json()["status"] if r.status_code == 200 else f"missing-{r.status_code}"
            if all(s in ("done", "failed") or s.startswith("missing") for s in states.values()):
                break
            if time.perf_counter() - t_fin > args.finish_timeout:
                break
            time.sleep(2.0)
        finish_wall = time.perf_counter() - t_fin
        idle, idle_err = asyncio.run(_reads(base, tokens["reader"], args.reads, args.read_concurrency))
        model = None
        done_ids = [i for i, s in states.items() if s == "done"]
        if done_ids:
            r = httpx.get(f"{base}/studies/{done_ids[0]}", headers={"Authorization": f"Bearer {tokens['reader']}"})
            model = (r.json().get("result") or {}).get("model")
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    counts = {k: sum(1 for s in states.values() if s == k) for k in ("done", "failed", "queued", "running")}
    lost = sum(1 for s in states.values() if s.startswith("missing"))
    res = {
        "hardware": hw,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": model,
        "submissions": {"sent": args.studies, "accepted": len(ids), "by_status": statuses, "wall_s": round(sub_wall, 2),
                        **{f"latency_{k}": v for k, v in _summ(sub_lat).items()}},
        "finished": counts["done"], "failed": counts["failed"], "pending": counts["queued"] + counts["running"],
        "lost": lost, "finish_wall_s": round(finish_wall, 1),
        "studies_per_hour": round(3600 * counts["done"] / finish_wall, 1) if finish_wall > 0 else None,
        "worklist_reads_loaded": {**_summ(loaded), "errors": loaded_err},
        "worklist_reads_idle": {**_summ(idle), "errors": idle_err},
    }
    lp, ip = res["worklist_reads_loaded"]["p50_ms"], res["worklist_reads_idle"]["p50_ms"]
    res["p50_ratio_loaded_over_idle"] = round(lp / ip, 2) if lp and ip else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"hardware: {hw['cpu']} ({hw['cpu_count']} cores), gpu: {hw['gpu']}; preread {hw['versions']['preread']}, "
          f"torch {hw['versions']['torch']}; workers {args.workers}; study {args.study.name}; model {model}")
    print(f"submissions: {args.studies} sent at once, accepted {len(ids)} {statuses}, "
          f"p50 {res['submissions']['latency_p50_ms']} ms, p95 {res['submissions']['latency_p95_ms']} ms")
    print(f"finished {counts['done']}, failed {counts['failed']}, pending {res['pending']}, lost {lost} "
          f"(in {finish_wall:.0f} s, {res['studies_per_hour']} studies/h)")
    for name in ("worklist_reads_idle", "worklist_reads_loaded"):
        r = res[name]
        print(f"{name}: {r['n']} reads, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, errors {r['errors']}")
    print(f"worklist read p50 loaded / idle (baseline): {res['p50_ratio_loaded_over_idle']}x")
    print(f"wrote {out}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
