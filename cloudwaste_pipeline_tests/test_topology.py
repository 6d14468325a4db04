"""The production topology for real: docker-compose.yml's three Dagster processes on the shipped
dagster.yaml, a schedule tick through the daemon, its runs through the run queue.

No container engine: the processes are started with the commands and arguments docker-compose.yml
gives them (read from it, only hosts, ports and the workspace path made local), from the venv
running the tests, with the checkout first on ``PYTHONPATH``:

- ``user_code``: ``dagster api grpc -m cloudwaste_pipeline.definitions`` (ready when the compose
  healthcheck, ``dagster api grpc-health-check``, passes);
- ``webserver``: ``dagster-webserver -w <workspace>`` (ready when ``/server_info`` answers and the
  code location is loaded);
- ``daemon``: ``dagster-daemon run -w <workspace>``;

where the workspace is deploy/workspace.docker.yaml pointed at the local gRPC port. Their
``DAGSTER_HOME`` holds an unchanged copy of the top-level dagster.yaml (PostgreSQL storage from
``DAGSTER_PG_*``, the ``QueuedRunCoordinator`` and its tag limits, the ``DefaultRunLauncher``) on
a fresh database of the local server; the warehouse is a second fresh database, as in the compose
deployment. The clouds are simulated: a moto server (AWS, ``AWS_ENDPOINT_URL``) holding an
unattached volume and an unassociated Elastic IP in each region of the AWS account, and the
local fake of Azure's APIs serving one small subscription, both reached over loopback. Two
accounts, so two runs side by side: every run costs minutes of CPU on a small machine.

The tick is real but not waited for: ``daily_scan_schedule`` is started through the webserver's
GraphQL (``startSchedule``), then its stored state is moved back before the latest 01:00 UTC, so
the daemon's scheduler, started afterwards, finds that tick missed and launches it at once (the
scheduler launches every cron time after ``max(start_timestamp, last_iteration_timestamp)`` up
to now). The pipeline's clock is pinned to the tick's time (``CLOUDWASTE_NOW``), so each run
scans "today", the tick's day, live.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.events import DagsterEventType
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.scheduler.instigation import (
    InstigatorState,
    ScheduleInstigatorData,
    TickStatus,
)
from moto.ec2.models import ec2_backends
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.privacy.anonymize import hash_id, load_key
from cloudwaste_pipeline.simulation.azure_estate import (
    DEMO_SUBSCRIPTIONS,
    TenantSpec,
    expected_detections,
    plan_tenant,
)
from cloudwaste_pipeline.simulation.azure_fake import FakeAzure
from cloudwaste_pipeline.simulation.fleet import SimAccount
from cloudwaste_pipeline.simulation.replay import account_session, moto_cloud
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.engine import dispose_engines, make_engine

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
INSTANCE_YAML = ROOT / "dagster.yaml"
WORKSPACE = ROOT / "deploy" / "workspace.docker.yaml"
BIN = Path(sys.executable).parent
"""The venv running the tests: its ``dagster``, ``dagster-webserver`` and ``dagster-daemon``."""

SCHEDULE = "daily_scan_schedule"
AWS_ACCOUNTS = (SimAccount("topo-aws", "310000000001", ("us-east-1", "eu-west-1"), "user-3001"),)
AZURE_SUBSCRIPTION = DEMO_SUBSCRIPTIONS[1]  # one region, no Log Analytics workspace
AZURE_UNITS = 1  # every Azure template once
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME")
"""All the processes inherit from the test's environment: the rest is set here, as a container
gets only its image's ENV and the .env file."""

# Generous bounds, reached only by a hang: a scan run is eight processes (the run, then one per
# asset and check step, multiprocess executor), each importing the code location (~7 s of CPU),
# and a machine shared with other jobs takes minutes for the tick's two runs.
READY_TIMEOUT = 120  # seconds for the code server and the webserver to answer
TICK_TIMEOUT = 300  # seconds from the daemon's start to every run of the tick finished
LIFECYCLE = [
    DagsterEventType.RUN_ENQUEUED,
    DagsterEventType.RUN_STARTING,
    DagsterEventType.RUN_START,
    DagsterEventType.RUN_SUCCESS,
]
"""A queued run's events, in order, from submission to success."""
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
T = TypeVar("T")


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (last {lines} lines of {self.log}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


@dataclass
class Topology:
    """The Dagster processes of one test, each in a process group of its own (the code server's
    runs and their step workers join its group), stopped together however the test ends."""

    env: dict[str, str]
    workdir: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> Process:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """The daemon first (nothing new is launched), the code server (and its runs) last."""
        for process in reversed(self.processes):
            stop_group(process.popen)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)

    def check_alive(self) -> None:
        for process in self.processes:
            if process.popen.poll() is not None:
                pytest.fail(
                    f"{process.name} exited with {process.popen.returncode}\n{self.logs()}",
                    pytrace=False,
                )

    def wait_for(
        self, condition: Callable[[], T], what: str | Callable[[], str], timeout: float
    ) -> T:
        """``condition()`` once truthy; fails on a process exiting or at the timeout, saying
        ``what`` was awaited (a callable is evaluated then) with the processes' last lines."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                shown = what() if callable(what) else what
                pytest.fail(f"no {shown} within {timeout} s\n{self.logs()}", pytrace=False)
            time.sleep(0.5)  # polling, not an assertion


def stop_group(popen: subprocess.Popen) -> None:
    """SIGTERM to the group, then SIGKILL to what is left of it (children outlive a leader)."""
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=20)
    with suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    popen.wait(timeout=20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def local(command: list[str], **values: str) -> list[str]:
    """A compose command with the value after each flag replaced (``h="127.0.0.1"`` for
    ``-h``) and its program taken from the venv; a flag it lacks is a failure, not a guess."""
    command = list(command)
    for flag, value in values.items():
        assert f"-{flag}" in command, f"{command} has no -{flag}"
        command[command.index(f"-{flag}") + 1] = value
    return [str(BIN / command[0]), *command[1:]]


# --- GraphQL --------------------------------------------------------------------------------------

LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""

START_SCHEDULE = """
mutation Start($selector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on ScheduleNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        result = json.loads(answer.read())
    assert "errors" not in result, result["errors"]
    return result["data"]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=5) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def loaded_repository(url: str, location: str) -> str | None:
    """The repository name of ``location`` once the webserver has loaded it (None before)."""
    data = graphql(url, LOCATION_QUERY)["workspaceOrError"]
    assert data["__typename"] == "Workspace", data
    (entry,) = (e for e in data["locationEntries"] if e["name"] == location)
    loaded = entry["locationOrLoadError"]
    if loaded is None:
        return None
    assert loaded["__typename"] == "RepositoryLocation", loaded
    (repository,) = loaded["repositories"]
    return repository["name"]


# --- PostgreSQL and the simulated clouds ---------------------------------------------------------


@contextmanager
def fresh_database(admin: Engine) -> Iterator[sa.URL]:
    """An empty database on the server of ``admin``, dropped afterwards (connections too)."""
    name = f"cw_test_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def latest_tick_time(cron_hour: int, now: datetime) -> datetime:
    """The latest daily ``cron_hour``:00 UTC at or before ``now``."""
    tick = now.astimezone(UTC).replace(hour=cron_hour, minute=0, second=0, microsecond=0)
    return tick if tick <= now else tick - timedelta(days=1)


@dataclass(frozen=True)
class Planted:
    """The waste planted in one AWS account: resource id -> the scenario the scan must report."""

    account: SimAccount
    waste: dict[str, str]


def plant_aws_waste(account: SimAccount, created: datetime) -> Planted:
    """An unattached volume and an unassociated Elastic IP in each region of ``account``,
    created (moto's clock back-dated) at ``created``."""
    session = account_session(account)
    waste = {}
    for region in account.regions:
        ec2 = session.client("ec2", region_name=region)
        volume = ec2.create_volume(AvailabilityZone=f"{region}a", Size=50, VolumeType="gp3")
        backend = ec2_backends[account.account_id][region]  # moto's, in this process
        backend.get_volume(volume["VolumeId"]).create_time = created.replace(tzinfo=None)
        address = ec2.allocate_address(Domain="vpc")
        waste[volume["VolumeId"]] = "unattached_volume"
        waste[address["AllocationId"]] = "unassociated_ip"
    return Planted(account, waste)


def accounts_document() -> dict[str, Any]:
    aws = [
        {
            "name": a.alias,
            "provider": "aws",
            "owner_user_id": a.owner_user_id,
            "account_id": a.account_id,
            "regions": list(a.regions),
            "role_arn": a.role_arn,
        }
        for a in AWS_ACCOUNTS
    ]
    return {"accounts": [*aws, AZURE_SUBSCRIPTION.accounts_entry()]}


# --- the fixture ----------------------------------------------------------------------------------


@dataclass
class Deployment:
    tick_time: datetime
    env: dict[str, str]
    topology: Topology
    instance: dg.DagsterInstance
    warehouse_url: str
    webserver_url: str
    workspace: Path
    planted: list[Planted]
    azure_waste: dict[str, str]

    @property
    def day(self) -> date:
        return self.tick_time.date()


@pytest.fixture
def deployment(
    postgres_admin: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    """The simulated clouds, the two databases, the code server and the webserver up and
    answering, and the test's own instance on the same dagster.yaml; the daemon is left to
    the test. Everything is stopped and dropped afterwards, whatever happened."""
    tick_time = latest_tick_time(1, datetime.now(UTC))
    home = tmp_path / "cloudwaste_home"
    dagster_home = tmp_path / "dagster_home"
    home.mkdir()
    (dagster_home / "storage").mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_bytes(INSTANCE_YAML.read_bytes())  # unchanged
    (home / "accounts.yaml").write_text(yaml.safe_dump(accounts_document(), sort_keys=False))

    with (
        fresh_database(postgres_admin) as dagster_db,
        fresh_database(postgres_admin) as warehouse_db,
        moto_cloud() as aws_url,
    ):
        planted = [plant_aws_waste(a, tick_time - timedelta(days=10)) for a in AWS_ACCOUNTS]
        tenant = TenantSpec(
            now=tick_time, units_per_region=AZURE_UNITS, subscriptions=(AZURE_SUBSCRIPTION,)
        )
        fake = FakeAzure(plan_tenant(tenant), tick_time)
        with fake.serving():
            # What serving() exported for the SDKs (its names; the values read back).
            azure_env = {name: os.environ[name] for name in fake.environment(Path())}
            warehouse_url = warehouse_db.render_as_string(hide_password=False)
            settings = {
                "CLOUDWASTE_HOME": str(home),
                "CLOUDWASTE_DATABASE_URL": warehouse_url,
                "CLOUDWASTE_ANONYMIZATION_KEY": secrets.token_hex(32),
                "CLOUDWASTE_NOW": tick_time.isoformat(),
                "DAGSTER_HOME": str(dagster_home),
                "DAGSTER_PG_HOST": dagster_db.host or "127.0.0.1",
                "DAGSTER_PG_PORT": str(dagster_db.port or 5432),
                "DAGSTER_PG_DB": dagster_db.database or "",
                "DAGSTER_PG_USER": dagster_db.username or "postgres",
                "DAGSTER_PG_PASSWORD": dagster_db.password or "unused-by-trust-auth",
            }
            env = {
                **{k: os.environ[k] for k in PASSED_ENV if k in os.environ},
                "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
                ),
                "PYTHONUNBUFFERED": "1",  # as the image sets it: logs as they happen
                **settings,
                "AWS_ENDPOINT_URL": aws_url,
                "AWS_ACCESS_KEY_ID": "simulated",
                "AWS_SECRET_ACCESS_KEY": "simulated",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                **azure_env,
            }
            for name, value in settings.items():  # the test reads the same instance and home
                monkeypatch.setenv(name, value)

            grpc_port, web_port = free_port(), free_port()
            workspace = tmp_path / "workspace.yaml"
            document = yaml.safe_load(WORKSPACE.read_text())
            (location,) = document["load_from"]
            location["grpc_server"].update(host="127.0.0.1", port=grpc_port)
            workspace.write_text(yaml.safe_dump(document))

            topology = Topology(env, tmp_path)
            instance = None
            try:
                services = compose_services()
                topology.start(
                    "user_code",
                    local(services["user_code"]["command"], h="127.0.0.1", p=str(grpc_port)),
                )
                health = [w for w in services["user_code"]["healthcheck"]["test"] if w != "CMD"]
                health = local(health, p=str(grpc_port))

                def healthy() -> bool:
                    check = subprocess.run(
                        health, env=env, cwd=tmp_path, capture_output=True, timeout=60
                    )
                    return check.returncode == 0

                topology.wait_for(healthy, "healthy code server", READY_TIMEOUT)
                # The code server created the Dagster schema, as user_code does in compose.
                instance = dg.DagsterInstance.from_config(str(dagster_home))
                web = local(
                    services["webserver"]["command"],
                    h="127.0.0.1",
                    p=str(web_port),
                    w=str(workspace),
                )
                topology.start("webserver", web)
                url = f"http://127.0.0.1:{web_port}"
                topology.wait_for(lambda: answers(url), "/server_info answer", READY_TIMEOUT)
                yield Deployment(
                    tick_time=tick_time,
                    env=env,
                    topology=topology,
                    instance=instance,
                    warehouse_url=warehouse_url,
                    webserver_url=url,
                    workspace=workspace,
                    planted=planted,
                    azure_waste=expected_detections(fake.resources, tick_time),
                )
            finally:
                topology.stop()
                if instance is not None:
                    instance.dispose()
                dispose_engines(warehouse_url)


# --- the test -------------------------------------------------------------------------------------


def schedule_state(instance: dg.DagsterInstance) -> InstigatorState:
    (state,) = (
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        if s.instigator_name == SCHEDULE
    )
    return state


def expected_requests(tick_time: datetime) -> tuple[str, list[dg.RunRequest]]:
    """The schedule's job and what it asks for at ``tick_time``, evaluated here with the same
    accounts file: the test expects what the schedule's own logic requests, however it groups
    the accounts into runs."""
    from cloudwaste_pipeline.definitions import defs

    schedule = defs.resolve_schedule_def(SCHEDULE)
    with dg.instance_for_test(set_dagster_home=False) as scratch:  # partitions registered here
        context = dg.build_schedule_context(
            instance=scratch,
            scheduled_execution_time=tick_time,
            resources=defs.resources,
            repository_def=defs.get_repository_def(),
        )
        return schedule.job_name, list(schedule.evaluate_tick(context).run_requests or [])


def planted_id(provider: str, resource_id: str) -> str:
    """A detection's resource id as planted: AWS's id after the ARN's last ``/``, Azure's whole
    (lower-case: Azure ids are case-insensitive)."""
    return (resource_id.rsplit("/", 1)[-1] if provider == "aws" else resource_id).lower()


def run_failures(instance: dg.DagsterInstance, run_id: str) -> str:
    events = instance.all_logs(
        run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
    )
    return "; ".join(e.dagster_event.message or "" for e in events if e.dagster_event)


def test_a_schedule_tick_runs_through_the_compose_topology(deployment: Deployment) -> None:
    d, instance = deployment, deployment.instance
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)  # the shipped dagster.yaml
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"

    # The webserver loaded the code location from the code server; start the schedule there.
    (location,) = yaml.safe_load(d.workspace.read_text())["load_from"]
    location_name = location["grpc_server"]["location_name"]
    repository = d.topology.wait_for(
        lambda: loaded_repository(d.webserver_url, location_name),
        f"code location {location_name} loaded by the webserver",
        READY_TIMEOUT,
    )
    selector = {
        "repositoryLocationName": location_name,
        "repositoryName": repository,
        "scheduleName": SCHEDULE,
    }
    started = graphql(d.webserver_url, START_SCHEDULE, {"selector": selector})["startSchedule"]
    assert started == {"__typename": "ScheduleStateResult", "scheduleState": {"status": "RUNNING"}}

    # Started "now", the schedule's first tick would be tomorrow at 01:00 UTC: date its start
    # back to just before the latest 01:00, so the daemon finds that tick missed and runs it.
    state = schedule_state(instance)
    data = state.instigator_data
    assert isinstance(data, ScheduleInstigatorData) and state.is_running
    backdated = d.tick_time - timedelta(hours=1)
    instance.update_instigator_state(
        state.with_data(ScheduleInstigatorData(data.cron_schedule, backdated.timestamp()))
    )

    job_name, expected = expected_requests(d.tick_time)  # before the clock: imports the code
    daemon = compose_services()["daemon"]["command"]
    d.topology.start("daemon", local(daemon, w=str(d.workspace)))

    def tick() -> Any:
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        done = [t for t in ticks if t.timestamp == d.tick_time.timestamp()]
        if done and done[0].status == TickStatus.FAILURE:
            pytest.fail(f"the tick failed: {done[0].error}\n{d.topology.logs()}", pytrace=False)
        return done[0] if done and done[0].status != TickStatus.STARTED else None

    deadline = time.monotonic() + TICK_TIMEOUT
    the_tick = d.topology.wait_for(tick, f"tick of {d.tick_time} recorded", TICK_TIMEOUT)
    assert the_tick.status == TickStatus.SUCCESS, the_tick

    def runs() -> list[dg.DagsterRun] | None:
        found = [instance.get_run_by_id(i) for i in the_tick.run_ids]
        return found if all(r and r.status in FINISHED for r in found) else None

    def unfinished() -> str:
        found = [instance.get_run_by_id(i) for i in the_tick.run_ids]
        return "end of " + ", ".join(f"{r.run_id[:8]} {r.status.value}" for r in found if r)

    finished = d.topology.wait_for(runs, unfinished, max(deadline - time.monotonic(), 1))

    # As many runs as the schedule asks for at that time, for the same partitions and run keys.
    assert len(the_tick.run_ids) == len(expected) > 0
    assert sorted(the_tick.run_keys) == sorted(r.run_key for r in expected)
    assert sorted(r.tags["dagster/partition"] for r in finished) == sorted(
        str(r.partition_key) for r in expected
    )
    for run in finished:
        assert run.job_name == job_name
        assert run.status == dg.DagsterRunStatus.SUCCESS, (
            f"{run.run_id} {run.tags['dagster/partition']}: {run_failures(instance, run.run_id)}"
        )
        # Through the run queue: enqueued by the QueuedRunCoordinator when the tick submitted
        # it, then started by the daemon dequeuing it (Dagster 1.13 records no RUN_DEQUEUED: the
        # dequeue is the daemon's RUN_STARTING), then executed by the code server.
        lifecycle = instance.all_logs(run.run_id, of_type=set(LIFECYCLE))
        kinds = [e.dagster_event.event_type for e in lifecycle if e.dagster_event]
        assert kinds == LIFECYCLE, kinds

    # The warehouse holds the day's live scan of every account and its ML rows.
    key = load_key(d.env)
    engine = make_engine(d.warehouse_url)
    ml = schema.ml_training_data
    clouds = [("aws", p.account.account_id, p.waste) for p in d.planted]
    clouds.append(("azure", AZURE_SUBSCRIPTION.subscription_id, d.azure_waste))
    with engine.connect() as conn:
        for provider, cloud_id, waste in clouds:
            scan = queries.load_raw_scan(conn, provider, cloud_id, d.day)
            assert scan is not None, f"no {provider} raw scan of {d.day}"
            assert scan["status"] == "complete", scan.get("errors")
            found = {
                planted_id(provider, det["resource_id"]): det["detection_scenario"]
                for det in scan["detections"]
            }
            assert found == {k.lower(): v for k, v in waste.items()}, provider
            account_hash = hash_id("account", provider, cloud_id, key)
            rows = conn.execute(
                sa.select(sa.func.count()).where(
                    ml.c.scan_date == d.day, ml.c.account_hash == account_hash
                )
            ).scalar_one()
            assert rows == len(waste), (provider, rows)
