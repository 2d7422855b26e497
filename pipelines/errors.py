"""One exception root for preread, with a subclass per stage.

Every error raised for bad *input* derives from :class:`PrereadError`; its message says what was wrong
and what to do. The CLI prints ``str(err)`` on one line and exits 2; the API answers 4xx with a JSON body
``{"error": err.code, "detail": str(err)}``. Anything else is an internal failure (exit 1, HTTP 500).
"""

from __future__ import annotations


class PrereadError(Exception):
    """Root of every typed preread error. ``code`` is a stable machine-readable name."""

    code = "preread_error"
    http_status = 400

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message.strip()
        self.hint = hint
        super().__init__(self.message if not hint else f"{self.message} ({hint})")

    def one_line(self) -> str:
        """The message on a single line, prefixed by the error's kind, for the CLI."""
        text = " ".join(str(self).split())
        return f"{type(self).__name__}: {text}"


class ConfigError(PrereadError):
    """A configuration file or setting is missing or invalid."""

    code = "config_error"


class IngestError(PrereadError):
    """An input study could not be read as a CT volume (bad DICOM, bad archive, unsupported geometry)."""

    code = "ingest_error"
    http_status = 422


class UnsafeArchiveError(IngestError):
    """An archive tries to escape its folder, holds links, or expands to an absurd size."""

    code = "unsafe_archive"


class InputTooLargeError(IngestError):
    """An input exceeds a configured voxel, file or byte limit."""

    code = "input_too_large"
    http_status = 413


class GeometryError(IngestError):
    """A series' geometry cannot be used for measurement (tilt, gaps, inconsistent orientation)."""

    code = "geometry_error"


class PreprocessError(PrereadError):
    code = "preprocess_error"
    http_status = 422


class ReportParseError(PrereadError):
    """A report could not be read (empty, not text, unsupported DICOM SR)."""

    code = "report_parse_error"
    http_status = 422


class MeasureError(PrereadError):
    """A mask/image pair cannot be measured (shape mismatch, empty mask, missing geometry)."""

    code = "measure_error"
    http_status = 422


class ModelError(PrereadError):
    """A model could not be found, loaded or verified (missing file, hash mismatch, wrong contract)."""

    code = "model_error"
    http_status = 500


class GuidelineError(PrereadError):
    """A guideline table is invalid or does not cover the case asked for."""

    code = "guideline_error"


class DiscordanceError(PrereadError):
    code = "discordance_error"


class DicomExportError(PrereadError):
    """DICOM SEG/SR output cannot be made (masks do not match the source slices, source headers incomplete)."""

    code = "dicom_export_error"
    http_status = 422


class ServingError(PrereadError):
    """A request to the service is invalid (bad token, bad upload, unknown study)."""

    code = "serving_error"


class AuthError(ServingError):
    code = "unauthorized"
    http_status = 401


class ForbiddenError(ServingError):
    code = "forbidden"
    http_status = 403


class NotFoundError(ServingError):
    code = "not_found"
    http_status = 404


class QueueFullError(ServingError):
    code = "queue_full"
    http_status = 429
