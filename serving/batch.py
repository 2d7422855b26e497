"""``preread batch``: a backlog of studies as a Ray Data pipeline.

read (discover) → prepare on CPU tasks (ingest, report, lung mask) → infer on actors (one per GPU, the model
loaded once per actor; fractional CPUs when there is no GPU) → finish on CPU tasks (measure, compare) → rows.

The stages are the same functions ``preread analyze`` runs (:mod:`pipelines.analyze`), so batch and one-by-one
give identical findings. A study that fails is kept as a row with its error; the rest go on.
Without an address Ray starts embedded on this machine and listens on loopback only.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

REPORT_NAMES = ("report.txt", "report.dcm", "report.sr.dcm")


@dataclass(frozen=True)
class StudyInput:
    name: str
    study_path: str
    report_path: str


def discover_studies(inputs: list[Path]) -> list[StudyInput]:
    """Each study is a folder holding a report (``report.txt`` or a DICOM SR ``report.dcm``) and its DICOM,
    either in ``dicom/`` or beside the report. An input may be such a folder or a folder of them."""
    from pipelines.errors import IngestError

    found: list[StudyInput] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise IngestError(f"batch input {path} does not exist")
        candidates = [path] if _report_of(path) else sorted(p for p in path.iterdir() if p.is_dir())
        for folder in candidates:
            report = _report_of(folder)
            if report is None:
                continue
            image = folder / "dicom" if (folder / "dicom").is_dir() else folder
            found.append(StudyInput(name=folder.name, study_path=str(image), report_path=str(report)))
    if not found:
        raise IngestError("no studies found: each study folder needs a report.txt (or report.dcm) and its DICOM")
    return found


def _report_of(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    for name in REPORT_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _options(settings: dict):
    from pipelines.analyze import AnalyzeOptions

    return AnalyzeOptions(model=settings.get("model"), backend=settings.get("backend", "torch"),
                          device=settings.get("device"), overlays=False, dicom_out=False)


def prepare_row(row: dict, settings: dict) -> dict:
    """CPU stage: ingest, parse the report, segment the lungs. Errors are kept in the row."""
    from pipelines.analyze import prepare_study
    from pipelines.report import parse_report_file

    out = {"name": row["name"], "study_path": row["study_path"], "report_path": row["report_path"],
           "prepared": None, "detections": None, "error": None}
    try:
        parsed = parse_report_file(Path(row["report_path"]))
        prepared = prepare_study(row["study_path"], parsed, _options(settings))
        prepared.ingested.close()  # the volume is in memory; a zip's temporary folder must not travel
        out["prepared"] = pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # noqa: BLE001 - recorded per study, the batch goes on
        out["error"] = _describe(err)
    return out


class InferActor:
    """Holds the model once per actor (one per GPU); runs the nodule model on prepared studies."""

    def __init__(self, settings: dict):
        import ray

        self.settings = settings
        self.options = _options(settings)
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.actor_id = f"{os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        from pipelines.analyze import run_model

        n = len(batch["name"])
        detections, errors, actors, gpus = [], [], [], []
        for i in range(n):
            err = _no_error_as_none(batch["error"][i])
            det = None
            if err is None:
                try:
                    prepared = pickle.loads(batch["prepared"][i])
                    det = pickle.dumps(run_model(prepared, self.options), protocol=pickle.HIGHEST_PROTOCOL)
                except Exception as exc:  # noqa: BLE001
                    err = _describe(exc)
            detections.append(det)
            errors.append(err)
            actors.append(self.actor_id)
            gpus.append(",".join(self.gpu_ids))
        return {**{k: list(v) for k, v in batch.items()}, "detections": detections, "error": errors,
                "actor": actors, "gpu_ids": gpus}


def finish_row(row: dict, settings: dict) -> dict:
    """CPU stage: measure, compare with the report; the StudyResult travels as JSON text."""
    from pipelines.analyze import finish_study

    out = {"name": row["name"], "study_path": row["study_path"], "report_path": row.get("report_path"),
           "actor": row.get("actor"),
           "gpu_ids": row.get("gpu_ids"), "error": _no_error_as_none(row["error"]), "study_uid": None, "verdict": None,
           "priority": None, "n_ai_findings": None, "n_discordances": None, "result_json": None}
    if out["error"] is None:
        try:
            prepared = pickle.loads(row["prepared"])
            detections = pickle.loads(row["detections"])
            result = finish_study(prepared, detections, _options(settings))
            out.update(study_uid=result.study_uid, verdict=result.verdict, priority=float(result.priority),
                       n_ai_findings=len(result.ai_findings), n_discordances=len(result.discordances),
                       result_json=result.model_dump_json())
        except Exception as err:  # noqa: BLE001
            out["error"] = _describe(err)
    return out


def _no_error_as_none(value) -> str | None:
    """Ray Data's batches turn a column of None into NaN; an error is a non-empty string or nothing."""
    return value if isinstance(value, str) and value else None


def _describe(err: BaseException) -> str:
    from pipelines.errors import PrereadError

    if isinstance(err, PrereadError):
        return err.one_line()
    log.warning("study failed with an internal error", exc_info=True)
    return f"internal failure ({type(err).__name__}): {' '.join(str(err).split())}"


def init_ray(address: str | None, *, num_cpus: int | None = None, num_gpus: int | None = None) -> dict:
    """Connect to ``address`` or start an embedded Ray bound to loopback. Returns the cluster's resources."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    if not address:
        _loopback_only()
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), num_gpus=num_gpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", logging_level=logging.WARNING, log_to_driver=False)
    return ray.cluster_resources()


def _loopback_only() -> None:
    """Make an embedded Ray take 127.0.0.1 as its node address, so that its servers bind to loopback only.

    ``ray.init(_node_ip_address="127.0.0.1")`` is not enough: Ray swaps a loopback address for the machine's
    routable one. With single-machine mode (the switch Ray itself uses on macOS/Windows) the node address is
    loopback and GCS, raylet, workers and the dashboard agent listen on 127.0.0.1 (checked with ``ss -ltnp``).
    """
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for worker processes started from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # the module read the variable at import


def run_batch(studies: list[StudyInput], *, settings: dict | None = None, workers: int | None = None,
              show_progress: bool = True) -> list[dict]:
    """Run the studies through Ray Data; one row per study (errors included), in input order."""
    import ray
    import ray.data

    settings = dict(settings or {})
    resources = ray.cluster_resources()
    n_gpus = int(resources.get("GPU", 0))
    n_cpus = float(resources.get("CPU", 1))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = show_progress
    ctx.execution_options.preserve_order = True

    if n_gpus > 0:
        # One inference actor per GPU; CPU stages keep the CPUs.
        actor_kwargs = {"num_gpus": 1, "num_cpus": 0.25,
                        "compute": ray.data.ActorPoolStrategy(size=workers or n_gpus)}
    else:
        # No GPU: actors get fractional CPUs, so CPU stages are never starved (seen to hang on 2 cores).
        n = workers or 1
        actor_kwargs = {"num_cpus": max(0.1, min(1.0, (n_cpus - 0.5) / n)), "compute": ray.data.ActorPoolStrategy(size=n)}
    cpu_stage = max(0.1, min(1.0, n_cpus / 4))

    ds = ray.data.from_items([s.__dict__ for s in studies], override_num_blocks=len(studies))
    ds = ds.map(prepare_row, fn_kwargs={"settings": settings}, num_cpus=cpu_stage)
    ds = ds.map_batches(InferActor, fn_constructor_kwargs={"settings": settings}, batch_size=1, **actor_kwargs)
    ds = ds.map(finish_row, fn_kwargs={"settings": settings}, num_cpus=cpu_stage)
    rows = ds.take_all()
    order = {s.name: i for i, s in enumerate(studies)}
    rows.sort(key=lambda r: order.get(r["name"], 0))
    return rows


def write_rows(rows: list[dict], out: Path) -> Path:
    """Parquet (``.parquet``) or JSON lines (anything else)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), out)
    else:
        with out.open("w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    return out
