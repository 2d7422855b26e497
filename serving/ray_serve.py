"""Online analysis on Ray: a Ray Serve deployment of the same predictor the CLI uses, and remote analysis
for the service's workers when ``PREREAD_RAY_ADDRESS`` names a cluster.

* :class:`PrereadPredictor` loads the nodule model once per replica (resources declared in the decorator,
  one GPU per replica where the cluster has GPUs) and batches requests with ``@serve.batch``.
* :func:`build_serve_app` puts the service's own FastAPI app (the same routes as ``preread serve``) in
  front of it with ``serve.ingress``; the ingress replica runs a queue worker whose analysis is sent to the
  predictor, so jobs accepted by the routes are analysed by the Serve replicas.
* :func:`analyze_remote` runs one study as a Ray task on a cluster (the service's workers use it when a
  Ray address is configured). Artifacts are written to the job's folder, which must be on storage the
  Ray nodes share (on one machine it is).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)


def _analyze(study_path: str, report_text: str, out_dir: str | None, options: dict) -> dict:
    from pipelines.analyze import AnalyzeOptions, analyze_study

    result = analyze_study(study_path, report_text, out_dir=out_dir, options=AnalyzeOptions(**options))
    return result.model_dump(mode="json")


def analyze_remote(address: str | None, study_path: Path, report_text: str, out_dir: Path | None,
                   options: dict) -> dict:
    """Run one study as a Ray task (one GPU when the cluster has any) and return the StudyResult as JSON."""
    import ray

    from serving.batch import init_ray

    resources = init_ray(address)
    remote = ray.remote(num_gpus=1 if resources.get("GPU", 0) >= 1 else 0, num_cpus=0.5, max_retries=0)(_analyze)
    return ray.get(remote.remote(str(study_path), report_text, str(out_dir) if out_dir else None, options))


def _make_deployments():
    from ray import serve

    @serve.deployment(name="preread-predictor", ray_actor_options={"num_cpus": 0.5})
    class PrereadPredictor:
        """Holds the model once per replica; analyses studies in batches."""

        def __init__(self, options: dict | None = None):
            from pipelines.analyze import AnalyzeOptions
            from pipelines.infer import get_model

            self.options = dict(options or {})
            opts = AnalyzeOptions(**self.options)
            get_model(opts.model, opts.backend, opts.device or "cpu")  # load (and verify) the weights now

        @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
        async def analyze(self, requests: list[dict]) -> list[dict]:
            out = []
            for req in requests:
                try:
                    out.append({"result": _analyze(req["study_path"], req["report_text"], req.get("out_dir"),
                                                   {**self.options, **req.get("options", {})}), "error": None})
                except Exception as err:  # noqa: BLE001 - one bad study does not fail its batch-mates
                    from pipelines.errors import PrereadError

                    out.append({"result": None, "error": err.one_line() if isinstance(err, PrereadError)
                                else f"internal failure ({type(err).__name__}): {err}",
                                "code": getattr(err, "code", "internal_error"),
                                "http_status": getattr(err, "http_status", 500)})
            return out

        async def __call__(self, request) -> dict:
            body = await request.json()
            return await self.analyze(body)

    return PrereadPredictor


def build_predictor_app(options: dict | None = None):
    """The predictor alone, for ``serve.run`` (HTTP: POST a JSON body with study_path and report_text)."""
    return _make_deployments().bind(options or {})


def build_serve_app(settings=None, options: dict | None = None):
    """The service's FastAPI routes as a Serve ingress in front of the predictor deployment."""
    from ray import serve

    from serving.app import create_app
    from serving.settings import load_settings

    settings = settings or load_settings()
    predictor = _make_deployments().bind(options or {})
    api = create_app(settings, start_workers=False)

    @serve.deployment(name="preread-ingress", ray_actor_options={"num_cpus": 0.25})
    @serve.ingress(api)
    class PrereadIngress:
        def __init__(self, predictor_handle):
            self._worker = _ServeQueueWorker(settings, predictor_handle)
            self._worker.start()

    return PrereadIngress.bind(predictor)


class _ServeQueueWorker(threading.Thread):
    """A queue worker inside the ingress replica whose analysis goes to the predictor deployment."""

    def __init__(self, settings, handle):
        super().__init__(daemon=True, name="serve-queue-worker")
        self.settings, self.handle = settings, handle

    def run(self) -> None:
        import serving.worker as worker_mod
        from pipelines.errors import PrereadError
        from pipelines.types import StudyResult

        handle = self.handle

        class _RemoteError(PrereadError):
            pass

        def run_on_predictor(ctx):
            reply = handle.analyze.remote({
                "study_path": str(ctx.study_path), "report_text": ctx.report_text, "out_dir": str(ctx.out_dir),
            }).result()
            if reply["error"]:
                err = _RemoteError(reply["error"])
                err.code, err.http_status = reply.get("code", "internal_error"), reply.get("http_status", 500)
                raise err
            return StudyResult.model_validate(reply["result"])

        worker_mod.Worker(self.settings, "serve-ingress", analysis=run_on_predictor).run()
