"""Operations: accounts whose scans stopped arriving, and alerts on failed runs."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from cloudwaste_pipeline.definitions import defs
from cloudwaste_pipeline.defs.jobs import FINISHED
from cloudwaste_pipeline.defs.sensors import run_failure_alert_sensor
from cloudwaste_pipeline.demo import targets
from cloudwaste_pipeline.monitoring import WEBHOOK_ENV, failure_text, stale_accounts
from cloudwaste_pipeline.simulation.fleet import scan_time
from cloudwaste_pipeline_tests.demo_instance import TEST_SPEC

TODAY = date(2026, 11, 20)


def test_an_account_is_stale_past_the_allowed_age_or_when_never_scanned():
    last = {
        "fresh": TODAY,
        "late-a-day": TODAY - timedelta(days=2),
        "stopped": TODAY - timedelta(days=3),
        "long-gone": TODAY - timedelta(days=40),
        "never": None,
    }
    stale = stale_accounts(last, TODAY)
    assert [s.alias for s in stale] == ["never", "long-gone", "stopped"]
    assert [s.days_since for s in stale] == [None, 40, 3]
    assert stale_accounts(last, TODAY, max_age_days=0)[-1].alias == "late-a-day"


def test_failure_text_names_the_run_and_scrubs_ids_from_the_error():
    text = failure_text(
        "scan_job",
        "run-1",
        "2026-11-16|prod-main",
        "AccessDenied: arn:aws:iam::123456789012:role/Scan cannot read vol-0abc1234def567890\n"
        "Traceback ...",
    )
    assert text.startswith("CloudWaste run failed: scan_job partition 2026-11-16|prod-main")
    assert "run-1" in text and "AccessDenied" in text
    assert "123456789012" not in text and "vol-0abc1234def567890" not in text
    assert "Traceback" not in text
    assert failure_text("x", "r", None, None).endswith("no error message")


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[dict]]:
    """A local webhook receiver; ``CLOUDWASTE_ALERT_WEBHOOK_URL`` points at it."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(WEBHOOK_ENV, f"http://127.0.0.1:{server.server_port}/hook")
    yield received
    server.shutdown()
    server.server_close()


@dg.op
def read_volume() -> None:
    raise RuntimeError("AccessDenied on arn:aws:ec2:us-east-1:123456789012:volume/vol-0abc12345")


@dg.job
def failing_job() -> None:
    read_volume()


def _failure_context(instance: dg.DagsterInstance) -> dg.RunFailureSensorContext:
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ).for_run_failure()


def test_a_failed_run_posts_one_scrubbed_alert_to_the_webhook(webhook):
    with dg.instance_for_test() as instance:
        context = _failure_context(instance)
        run_failure_alert_sensor(context)
    [alert] = webhook
    assert alert["text"].startswith("CloudWaste run failed: failing_job")
    assert context.dagster_run.run_id in alert["text"]
    assert "AccessDenied" in alert["text"]
    assert "123456789012" not in alert["text"] and "vol-0abc12345" not in alert["text"]


def test_an_unreachable_webhook_does_not_fail_the_sensor(monkeypatch):
    monkeypatch.setenv(WEBHOOK_ENV, "http://127.0.0.1:9/unreachable")
    with dg.instance_for_test() as instance:
        run_failure_alert_sensor(_failure_context(instance))  # logs a warning, raises nothing


def test_the_alert_sensor_and_freshness_schedule_are_deployed():
    assert defs.resolve_sensor_def("run_failure_alert_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING
    )
    schedule = defs.resolve_schedule_def("scan_freshness_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.job_name == "scan_freshness_job"
    assets = defs.resolve_asset_graph()
    for key in ("raw_cloud_scans", "ml_dataset_exports"):
        assert assets.get(dg.AssetKey(key)).freshness_policy is not None


def _freshness(monkeypatch, day: date) -> dg.AssetCheckEvaluation:
    monkeypatch.setenv("CLOUDWASTE_NOW", scan_time(day).isoformat())
    job = defs.resolve_job_def("scan_freshness_job")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_the_freshness_check_flags_every_account_once_scans_stop(demo, monkeypatch):
    """The demo scanned every account up to its last day; days later, without new scans, every
    account is flagged, by alias (the partition key) and never by cloud id."""
    fresh = _freshness(monkeypatch, TEST_SPEC.demo_date)
    assert fresh.passed
    assert fresh.metadata["accounts"].value == len(targets(TEST_SPEC))

    stopped = _freshness(monkeypatch, TEST_SPEC.demo_date + timedelta(days=5))
    assert not stopped.passed
    assert stopped.severity == dg.AssetCheckSeverity.ERROR
    assert stopped.metadata["stale_accounts"].value == len(targets(TEST_SPEC))
    table = stopped.metadata["stale"].value
    for target in targets(TEST_SPEC):
        assert f"| {target.name} | {TEST_SPEC.demo_date} | 5 |" in table
        assert target.cloud_id not in table


@dg.op
def succeed() -> int:
    return 1


@dg.job
def quick_job() -> None:
    succeed()


def test_prune_runs_deletes_finished_runs_before_the_cutoff_with_their_logs():
    from datetime import UTC, datetime

    from cloudwaste_pipeline.defs.jobs import prune_runs

    with dg.instance_for_test() as instance:
        finished = [quick_job.execute_in_process(instance=instance).run_id for _ in range(5)]
        running = instance.create_run_for_job(quick_job, status=dg.DagsterRunStatus.STARTED)
        assert prune_runs(instance, datetime(2000, 1, 1, tzinfo=UTC), batch_size=2) == 0
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        assert prune_runs(instance, cutoff, batch_size=2) == 5
        assert [r.run_id for r in instance.get_runs()] == [running.run_id]
        assert not instance.all_logs(finished[0])


def test_the_monthly_cleanup_prunes_old_dagster_runs(demo, tmp_path):
    """ml_cleanup_job on a copy of the demo, its clock a year on: every finished run of the
    demo is past the 90-day run retention and goes; the cleanup's own run stays."""
    from cloudwaste_pipeline_tests.demo_instance import demo_copy

    with demo_copy(demo, tmp_path) as env, dg.DagsterInstance.get() as instance:
        before = instance.get_runs_count(dg.RunsFilter(statuses=list(FINISHED)))
        assert before > 10
        os.environ["CLOUDWASTE_NOW"] = scan_time(
            TEST_SPEC.demo_date + timedelta(days=365)
        ).isoformat()
        result = defs.resolve_job_def("ml_cleanup_job").execute_in_process(instance=instance)
        assert result.success
        deleted = result.output_for_node("prune_dagster_runs")
        assert deleted == before
        assert [r.run_id for r in instance.get_runs()] == [result.run_id]
        assert env["DAGSTER_HOME"] in str(instance.root_directory)
