"""On-demand exports of any window (last 30 / 90 days, a date range): an op job, not partitions.

A window that is not a week is not a partition of ``ml_dataset_exports``: as partitions, ad-hoc
windows would overlap the weekly ones and record materializations of that asset that are not
weeks. So ``adhoc_export_job`` is its own job, launched from the Launchpad with run config, and
writes under ``adhoc/<start>_<end>/``, where it can never overwrite a scheduled week's files.
The API (``api.export_datasets``) and the CLI (``cloudwaste export``) run the same function.
"""

from datetime import date

import dagster as dg
from pydantic import Field

from cloudwaste_pipeline.defs.errors import scrubbed
from cloudwaste_pipeline.defs.jobs import EXPORT_TAGS
from cloudwaste_pipeline.defs.resources import FilesResource, WarehouseResource
from cloudwaste_pipeline.exports import (
    COMPRESSIONS,
    FORMATS,
    ExportError,
    export_subfolder,
    resolve_window,
)
from cloudwaste_pipeline.quality import DataQualityError, export_if_valid


class AdhocExportConfig(dg.Config):
    """The window: ``last_days`` (30, 90...) ending today, or ``start`` (and ``end``)."""

    last_days: int | None = Field(
        default=90, description="Export the last N days (today included); ignored with start."
    )
    start: str | None = Field(default=None, description="First day, YYYY-MM-DD.")
    end: str | None = Field(default=None, description="Last day, YYYY-MM-DD (default today).")
    formats: list[str] = Field(default=list(FORMATS), description="Any of json, csv, parquet.")
    compression: str = Field(default="none", description="none or gzip.")

    def window(self) -> tuple[date, date]:
        """Checked as the API and the CLI check it (``exports.resolve_window``)."""
        start, end = self.start or None, self.end or None
        return resolve_window(None if start else self.last_days, start, end)


@dg.op(
    description=(
        "Export the three datasets of an ad-hoc window under adhoc/<start>_<end>/ (local or "
        "S3), after the data quality checks: an ERROR check that fails writes nothing."
    ),
    tags={"kind": "export"},
)
@scrubbed
def export_adhoc_window(
    context: dg.OpExecutionContext,
    config: AdhocExportConfig,
    warehouse: WarehouseResource,
    files: FilesResource,
) -> dict[str, int]:
    if config.compression not in COMPRESSIONS:
        raise dg.Failure(f"compression {config.compression!r}: use one of {COMPRESSIONS}")
    start, end = config.window()
    try:
        result, report = export_if_valid(
            warehouse.engine(),
            files.export_destination(export_subfolder("adhoc", start, end)),
            start,
            end,
            formats=tuple(config.formats),
            compression=config.compression,
            kind="adhoc",
        )
    except DataQualityError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={c.name: c.passed for c in exc.report.checks},
        ) from exc
    except ExportError as exc:  # disk full, no permission: the sentence, not a traceback
        raise dg.Failure(description=str(exc)) from exc
    for check in report.checks:
        if not check.passed:
            context.log.warning(f"quality {check.name} ({check.severity}) failed: {check.details}")
    context.add_output_metadata(
        {
            "window": f"{start} .. {end}",
            "dagster/uri": result.location,
            "manifest": dg.MetadataValue.path(result.manifest),
            **{f"rows_{name}": n for name, n in result.row_counts.items()},
            "dagster/row_count": sum(result.row_counts.values()),
        }
    )
    return result.row_counts


@dg.job(
    tags=EXPORT_TAGS,
    description=(
        "Ad-hoc export of any window (run config: last_days, or start/end), under "
        "adhoc/<start>_<end>/ so it never overwrites a scheduled week."
    ),
)
def adhoc_export_job() -> None:
    export_adhoc_window()
