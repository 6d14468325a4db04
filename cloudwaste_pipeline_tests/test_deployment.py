"""The production deployment files: valid for the tools that read them, and in step with each other.

No Docker engine, Helm or cluster is needed. docker-compose.yml goes through Debian's
docker-compose 1.29 (`config` parses, validates and interpolates it without an engine);
dagster.yaml through Dagster itself (its schema, the classes it names, the concurrency limits
applied to the tags our jobs really carry, and a real instance on a throwaway PostgreSQL
database); deploy/helm/values.yaml is compared with both, so Kubernetes cannot drift from the
compose deployment unnoticed. Images are never built here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import DefaultRunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClassData
from dagster._utils.tags import TagConcurrencyLimitsCounter

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
INSTANCE_YAML = ROOT / "dagster.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WORKSPACE = ROOT / "deploy" / "workspace.docker.yaml"
INITDB = ROOT / "deploy" / "postgres" / "initdb"
HELM_VALUES = ROOT / "deploy" / "helm" / "values.yaml"
HELM_PREREQUISITES = ROOT / "deploy" / "helm" / "prerequisites.example.yaml"
DOCS = ROOT / "docs" / "deployment.md"

DAGSTER_SERVICES = ("user_code", "webserver", "daemon")
COMPOSE_ONLY = frozenset({"CLOUDWASTE_IMAGE", "CLOUDWASTE_UI_BIND"})
"""Names of .env.example that docker compose reads for itself; the containers ignore them."""
SECRET_NAMES = (
    "DAGSTER_PG_PASSWORD",
    "CLOUDWASTE_ANONYMIZATION_KEY",
    "CLOUDWASTE_DATABASE_URL",
    "AWS_SECRET_ACCESS_KEY",
    "AZURE_CLIENT_SECRET",
)
NOT_DEPLOYMENT_SETTINGS = frozenset(
    {"CLOUDWASTE_HOME", "DAGSTER_HOME", "CLOUDWASTE_NOW", "CLOUDWASTE_FAULT_CRASH_AT"}
)
"""Set by the image (the volumes are mounted there), or only for the demo and the tests."""
REQUIRED_BY_CODE = frozenset({"CLOUDWASTE_DATABASE_URL", "CLOUDWASTE_ANONYMIZATION_KEY"})
"""Without these the code falls back to SQLite in the container, or refuses to hash anything."""
TEST_PASSWORD = "pw-only-in-this-test-7f3a"


# --- helpers ------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value for name, value in pairs}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dockerfile_env(name: str) -> str:
    """A path the image sets with ENV, which the volumes must mount exactly."""
    match = re.search(rf"\b{name}=(\S+)", DOCKERFILE.read_text())
    assert match, f"Dockerfile sets no {name}"
    return match.group(1)


def dockerfile_cmd() -> list[str]:
    """The image's default command: what Kubernetes and a bare `docker run` start."""
    match = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    return yaml.safe_load(match.group(1))


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def env_references(node: Any) -> set[str]:
    """Every ``{env: NAME}`` of a Dagster config tree: the variables the instance needs."""
    if isinstance(node, Mapping):
        own = {node["env"]} if set(node) == {"env"} else set()
        return own.union(*(env_references(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node))
    return set()


def settings_read_by_the_code() -> set[str]:
    """The CLOUDWASTE_* and DAGSTER_* names the package reads (digits too: ..._S3_URI)."""
    pattern = re.compile(r"\"((?:CLOUDWASTE|DAGSTER)_[A-Z0-9_]+)\"")
    return {
        n
        for p in (ROOT / "cloudwaste_pipeline").rglob("*.py")
        for n in pattern.findall(p.read_text())
    }


def dummy_env() -> dict[str, str]:
    """.env.example with fresh secrets, minus what compose must default by itself."""
    env = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k not in COMPOSE_ONLY}
    env["DAGSTER_PG_PASSWORD"] = TEST_PASSWORD
    env["CLOUDWASTE_ANONYMIZATION_KEY"] = "key-only-in-this-test-0123456789"
    env["CLOUDWASTE_DATABASE_URL"] = (
        f"postgresql+psycopg2://dagster:{TEST_PASSWORD}@postgres:5432/cloudwaste"
    )
    return env


def compose_config(workdir: Path, env: Mapping[str, str]) -> dict[str, Any]:
    """``docker-compose config`` on a copy of docker-compose.yml beside a dummy ``.env``.

    ``env_file: .env`` resolves next to the compose file, so the copy makes the test independent
    of whatever .env the checkout holds (usually none). The process gets no CLOUDWASTE_* or
    DAGSTER_* variable of ours: the shell's environment would override the env file.
    """
    binary = shutil.which("docker-compose")
    if binary is None:
        reason = "docker-compose not found: `make test` installs Debian's (scripts/test-tools)"
        print(reason)
        pytest.skip(reason)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(COMPOSE, workdir / "docker-compose.yml")
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(
        [binary, "--env-file", str(workdir / ".env"), "config"],
        cwd=workdir,
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return compose_config(tmp_path_factory.mktemp("compose"), dummy_env())


@pytest.fixture(scope="module")
def instance_yaml() -> dict[str, Any]:
    return load_yaml(INSTANCE_YAML)


@pytest.fixture(scope="module")
def tag_limits(instance_yaml: dict[str, Any]) -> list[dict[str, Any]]:
    return instance_yaml["run_coordinator"]["config"]["tag_concurrency_limits"]


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return load_yaml(HELM_VALUES)


@pytest.fixture(scope="module")
def code_deployment(helm: dict[str, Any]) -> dict[str, Any]:
    (deployment,) = helm["dagster-user-deployments"]["deployments"]
    return deployment


@pytest.fixture(scope="module")
def prerequisites() -> dict[tuple[str, str], dict[str, Any]]:
    """The Kubernetes objects values.yaml expects, by (kind, name)."""
    docs = yaml.safe_load_all(HELM_PREREQUISITES.read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


# --- docker-compose.yml -------------------------------------------------------------------------


def test_compose_has_postgres_and_the_three_dagster_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"postgres", *DAGSTER_SERVICES}


def test_webserver_is_published_on_loopback_by_default(compose: dict[str, Any]) -> None:
    """The UI has no login: nothing but the host (and its reverse proxy) may reach it."""
    assert compose["services"]["webserver"]["ports"] == ["127.0.0.1:3000:3000/tcp"]
    for name in ("postgres", "user_code", "daemon"):
        assert "ports" not in compose["services"][name], f"{name} must not be published"


def test_webserver_address_is_configurable(tmp_path: Path) -> None:
    config = compose_config(tmp_path, {**dummy_env(), "CLOUDWASTE_UI_BIND": "192.0.2.10"})
    assert config["services"]["webserver"]["ports"] == ["192.0.2.10:3000:3000/tcp"]


def test_user_code_serves_the_code_location_the_image_serves(compose: dict[str, Any]) -> None:
    command = compose["services"]["user_code"]["command"]
    assert command == dockerfile_cmd()
    assert command[:3] == ["dagster", "api", "grpc"]
    assert flag_value(command, "-m") == "cloudwaste_pipeline.definitions"


def test_webserver_and_daemon_load_code_only_over_grpc(compose: dict[str, Any]) -> None:
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert workdir, "Dockerfile has no WORKDIR"
    in_image = f"{workdir.group(1)}/{WORKSPACE.relative_to(ROOT)}"
    services = compose["services"]
    assert services["daemon"]["command"] == ["dagster-daemon", "run", "-w", in_image]
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert flag_value(services["webserver"]["command"], "-w") == in_image

    (location,) = load_yaml(WORKSPACE)["load_from"]
    server = location["grpc_server"]
    assert server["host"] == "user_code"
    assert str(server["port"]) == flag_value(services["user_code"]["command"], "-p")
    assert server["location_name"] == "cloudwaste_pipeline"


def test_dagster_services_read_dot_env(compose: dict[str, Any]) -> None:
    raw = load_yaml(COMPOSE)["services"]
    for name in DAGSTER_SERVICES:
        assert raw[name]["env_file"] == ".env", name
        assert compose["services"][name]["environment"] == dummy_env(), name


def test_postgres_is_built_from_the_env_file(compose: dict[str, Any]) -> None:
    env = dummy_env()
    assert compose["services"]["postgres"]["environment"] == {
        "POSTGRES_USER": env["DAGSTER_PG_USER"],
        "POSTGRES_PASSWORD": TEST_PASSWORD,
        "POSTGRES_DB": env["DAGSTER_PG_DB"],
    }


def test_compose_file_holds_no_secret() -> None:
    """Values come from .env only: no dummy of .env.example, no literal environment value."""
    text = COMPOSE.read_text()
    example = read_env_file(ENV_EXAMPLE)
    leaked = [name for name in SECRET_NAMES if example[name] and example[name] in text]
    assert not leaked
    for name, service in load_yaml(COMPOSE)["services"].items():
        for key, value in (service.get("environment") or {}).items():
            assert re.fullmatch(r"\$\{\w+(:[?-][^}]*)?\}", str(value)), (name, key, value)


def test_services_wait_for_a_healthy_postgres(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in DAGSTER_SERVICES:
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_volumes_follow_where_code_executes(compose: dict[str, Any]) -> None:
    """Runs, sensors and schedules execute in user_code (DefaultRunLauncher): it alone needs
    CLOUDWASTE_HOME; compute logs are written there and read by the UI, so all three share
    Dagster's storage."""
    home = f"cloudwaste_home:{dockerfile_env('CLOUDWASTE_HOME')}:rw"
    storage = f"dagster_storage:{dockerfile_env('DAGSTER_HOME')}/storage:rw"
    volumes = {name: compose["services"][name]["volumes"] for name in DAGSTER_SERVICES}
    assert volumes == {
        "user_code": [home, storage],
        "webserver": [storage],
        "daemon": [storage],
    }
    assert "postgres_data:/var/lib/postgresql/data:rw" in compose["services"]["postgres"]["volumes"]
    assert set(compose["volumes"]) == {"postgres_data", "cloudwaste_home", "dagster_storage"}


def test_warehouse_and_dagster_storage_are_two_databases_of_the_postgres_service() -> None:
    env = read_env_file(ENV_EXAMPLE)
    url = urlsplit(env["CLOUDWASTE_DATABASE_URL"])
    warehouse_db = url.path.lstrip("/")
    assert env["DAGSTER_PG_HOST"] == url.hostname == "postgres"
    assert str(url.port) == env["DAGSTER_PG_PORT"]
    assert (url.username, url.password) == (env["DAGSTER_PG_USER"], env["DAGSTER_PG_PASSWORD"])
    assert warehouse_db != env["DAGSTER_PG_DB"]

    created = {
        name
        for script in INITDB.glob("*.sql")
        for name in re.findall(r"CREATE DATABASE (\w+)", script.read_text())
    }
    assert created == {warehouse_db}
    postgres_volumes = load_yaml(COMPOSE)["services"]["postgres"]["volumes"]
    assert f"./{INITDB.relative_to(ROOT)}:/docker-entrypoint-initdb.d:ro" in postgres_volumes


# --- .env, .gitignore, .dockerignore ------------------------------------------------------------


def test_env_is_ignored_by_git_and_the_template_is_not() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("git not installed" if git is None else f"{ROOT} is not a git checkout")

    def ignored(path: str) -> bool:
        result = subprocess.run([git, "check-ignore", "-q", path], cwd=ROOT, check=False)
        return result.returncode == 0

    assert ignored(".env")
    assert not ignored(".env.example")


def test_env_example_lists_every_variable_the_services_need(instance_yaml: dict[str, Any]) -> None:
    names = set(read_env_file(ENV_EXAMPLE))
    substituted = set(re.findall(r"(?<!\$)\$\{(\w+)", COMPOSE.read_text()))  # $${...} is escaped
    needed = substituted | env_references(instance_yaml) | REQUIRED_BY_CODE
    assert needed <= names, sorted(needed - names)


def test_env_example_offers_every_setting_the_code_reads() -> None:
    missing = (
        settings_read_by_the_code() - NOT_DEPLOYMENT_SETTINGS - set(read_env_file(ENV_EXAMPLE))
    )
    assert not missing, sorted(missing)


def test_every_project_variable_of_env_example_is_read_by_the_code() -> None:
    """A misspelt name would be silently ignored: each CLOUDWASTE_* one must be read."""
    ours = {n for n in read_env_file(ENV_EXAMPLE) if n.startswith("CLOUDWASTE_")} - COMPOSE_ONLY
    assert ours, "no CLOUDWASTE_* variable in .env.example"
    assert ours - settings_read_by_the_code() == set()


def test_image_leaves_out_secrets_and_local_state() -> None:
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".env", ".venv", ".cloudwaste", ".git", "build"} <= ignored
    assert not {"deploy", "dagster.yaml", "README.md", "pyproject.toml"} & ignored


# --- dagster.yaml -------------------------------------------------------------------------------


def test_instance_config_passes_dagster_schema_and_names_real_classes(tmp_path: Path) -> None:
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    coordinator = ConfigurableClassData(
        config["run_coordinator"]["module"],
        config["run_coordinator"]["class"],
        yaml.safe_dump(config["run_coordinator"]["config"]),
    ).rehydrate(QueuedRunCoordinator)
    assert isinstance(coordinator, QueuedRunCoordinator)
    launcher = ConfigurableClassData(
        config["run_launcher"]["module"], config["run_launcher"]["class"], "{}"
    ).rehydrate(DefaultRunLauncher)
    assert isinstance(launcher, DefaultRunLauncher)


@pytest.fixture(scope="module")
def run_tags() -> dict[str, dict[str, str]]:
    """The tags runs of the real jobs carry, by a short name."""
    from cloudwaste_pipeline.definitions import defs
    from cloudwaste_pipeline.defs.partitions import month_key, scan_key

    def tags(job_name: str, partition_key: str | None = None) -> dict[str, str]:
        job = defs.resolve_job_def(job_name)
        own = job.get_tags_for_partition_key(partition_key, None) if partition_key else {}
        return {**job.tags, **own}

    return {
        "scan a": tags("scan_job", scan_key("2026-11-16", "prod-a")),
        "scan a next day": tags("scan_job", scan_key("2026-11-17", "prod-a")),
        "scan b": tags("scan_job", scan_key("2026-11-16", "prod-b")),
        "retry a": {
            **tags("scan_job", scan_key("2026-11-16", "prod-a")),
            "cloudwaste/accounts": "prod-a",
        },
        "cost trends a": tags("cost_trends_job", month_key("2026-11-01", "prod-a")),
        "weekly export": tags("weekly_export_job", "2026-11-09"),
        "adhoc export": tags("adhoc_export_job"),
    }


def blocked(limits: list[dict[str, Any]], running: dict[str, str], queued: dict[str, str]) -> bool:
    """Whether the daemon's own counter holds ``queued`` back while ``running`` runs."""
    counter = TagConcurrencyLimitsCounter(limits, [DagsterRun(job_name="running", tags=running)])
    return counter.is_blocked(DagsterRun(job_name="queued", tags=queued))


def test_one_run_per_account_shard_at_a_time(
    tag_limits: list[dict[str, Any]], run_tags: dict[str, dict[str, str]]
) -> None:
    """Runs of one shard rewrite the same accounts' rows (and call the same accounts' APIs);
    the limit is per shard, so the number of limit values never grows with accounts."""
    from cloudwaste_pipeline.sharding import shard_of

    assert shard_of("prod-a") != shard_of("prod-b")  # the fixture's premise
    assert blocked(tag_limits, run_tags["scan a"], run_tags["scan a next day"])
    assert blocked(tag_limits, run_tags["scan a"], run_tags["cost trends a"])
    assert blocked(tag_limits, run_tags["scan a"], run_tags["retry a"])
    assert not blocked(tag_limits, run_tags["scan a"], run_tags["scan b"])
    assert run_tags["scan a"]["dagster/partition/shard"] == shard_of("prod-a")


def test_one_export_at_a_time(
    tag_limits: list[dict[str, Any]], run_tags: dict[str, dict[str, str]]
) -> None:
    """Exports are the heaviest runs, and two of one window would race to publish its files."""
    assert blocked(tag_limits, run_tags["weekly export"], run_tags["adhoc export"])
    assert blocked(tag_limits, run_tags["adhoc export"], run_tags["adhoc export"])
    assert not blocked(tag_limits, run_tags["weekly export"], run_tags["scan a"])


@pytest.fixture
def instance_on_postgres(postgres_url: str, tmp_path: Path) -> Iterator[DagsterInstance]:
    """dagster.yaml as shipped, on a throwaway database, with the variables it reads set."""
    url = sa.make_url(postgres_url)
    env = {
        "DAGSTER_PG_HOST": url.host or "127.0.0.1",
        "DAGSTER_PG_PORT": str(url.port or 5432),
        "DAGSTER_PG_DB": url.database or "",
        "DAGSTER_PG_USER": url.username or "postgres",
        "DAGSTER_PG_PASSWORD": url.password or "unused-by-trust-auth",
    }
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        instance = DagsterInstance.from_config(str(tmp_path))
        try:
            yield instance
        finally:
            instance.dispose()


def test_instance_loads_on_postgresql(
    instance_on_postgres: DagsterInstance, tag_limits: list[dict[str, Any]]
) -> None:
    instance = instance_on_postgres
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert instance.get_runs() == []  # the schema was created and answers
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert isinstance(instance.run_launcher, DefaultRunLauncher)
    queue = instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert list(queue.tag_concurrency_limits) == tag_limits


# --- deploy/helm/values.yaml --------------------------------------------------------------------


def test_helm_runs_the_compose_image_and_code_location(
    compose: dict[str, Any], code_deployment: dict[str, Any], helm: dict[str, Any]
) -> None:
    image = code_deployment["image"]
    assert f"{image['repository']}:{image['tag']}" == compose["services"]["user_code"]["image"]
    command = compose["services"]["user_code"]["command"]
    assert code_deployment["dagsterApiGrpcArgs"] == ["-m", flag_value(command, "-m")]
    assert str(code_deployment["port"]) == flag_value(command, "-p")
    assert helm["runLauncher"]["type"] == "K8sRunLauncher"


def test_image_has_the_k8s_run_launcher_of_the_pinned_dagster() -> None:
    """Run pods load the K8sRunLauncher from our image, at the version of the other libraries."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", "\n".join(project["dependencies"]), re.M))
    (k8s,) = project["optional-dependencies"]["k8s"]
    assert k8s == f"dagster-k8s=={pins['dagster-postgres']}"
    assert 'pip install ".[k8s]"' in DOCKERFILE.read_text()


def test_helm_uses_the_external_postgres_of_env_example(
    helm: dict[str, Any],
    instance_yaml: dict[str, Any],
    prerequisites: dict[tuple[str, str], dict[str, Any]],
) -> None:
    env = read_env_file(ENV_EXAMPLE)
    postgresql = helm["postgresql"]
    assert postgresql["enabled"] is False
    ours = instance_yaml["storage"]["postgres"]["postgres_db"]
    assert postgresql["postgresqlScheme"] == ours["scheme"] == "postgresql+psycopg2"
    assert postgresql["postgresqlHost"]
    assert postgresql["postgresqlUsername"] == env["DAGSTER_PG_USER"]
    assert postgresql["postgresqlDatabase"] == env["DAGSTER_PG_DB"]
    assert str(postgresql["service"]["port"]) == env["DAGSTER_PG_PORT"]
    assert helm["generatePostgresqlPasswordSecret"] is False
    secret = prerequisites[("Secret", helm["global"]["postgresqlSecretName"])]
    assert set(secret["stringData"]) == {"postgresql-password"}


def test_helm_secret_holds_the_names_of_env_example(
    helm: dict[str, Any],
    code_deployment: dict[str, Any],
    prerequisites: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """Run pods inherit the code server's env secrets (includeConfigInLaunchedRuns)."""
    assert code_deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    (name,) = (s["name"] for s in code_deployment["envSecrets"])
    data = prerequisites[("Secret", name)]["stringData"]
    expected = {
        n for n in read_env_file(ENV_EXAMPLE) if not n.startswith("DAGSTER_PG_")
    } - COMPOSE_ONLY
    assert set(data) == expected

    warehouse = urlsplit(data["CLOUDWASTE_DATABASE_URL"])
    compose_warehouse = urlsplit(read_env_file(ENV_EXAMPLE)["CLOUDWASTE_DATABASE_URL"])
    assert warehouse.hostname == helm["postgresql"]["postgresqlHost"]
    assert warehouse.username == helm["postgresql"]["postgresqlUsername"]
    assert warehouse.path == compose_warehouse.path


def test_helm_mounts_cloudwaste_home_where_the_image_expects_it(
    code_deployment: dict[str, Any], prerequisites: dict[tuple[str, str], dict[str, Any]]
) -> None:
    (mount,) = code_deployment["volumeMounts"]
    (volume,) = code_deployment["volumes"]
    assert mount == {"name": volume["name"], "mountPath": dockerfile_env("CLOUDWASTE_HOME")}
    claim = prerequisites[("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_helm_queue_and_retention_equal_dagster_yaml(
    helm: dict[str, Any], instance_yaml: dict[str, Any], tag_limits: list[dict[str, Any]]
) -> None:
    coordinator = helm["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    ours = instance_yaml["run_coordinator"]["config"]
    assert queued["tagConcurrencyLimits"] == tag_limits
    assert queued["maxConcurrentRuns"] == ours["max_concurrent_runs"]

    retention, helm_retention = instance_yaml["retention"], helm["retention"]
    assert helm_retention["enabled"] is True
    assert helm_retention["schedule"]["purgeAfterDays"] == retention["schedule"]["purge_after_days"]
    by_status = helm_retention["sensor"]["purgeAfterDays"]
    assert retention["sensor"]["purge_after_days"].items() <= by_status.items()


def test_helm_webserver_is_internal(helm: dict[str, Any]) -> None:
    assert helm["dagsterWebserver"]["service"]["type"] == "ClusterIP"


def test_docs_pin_the_chart_to_the_dagster_version() -> None:
    """The chart's version is Dagster's: its webserver and daemon must match our code server."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (dagster_pin,) = (d for d in project["dependencies"] if d.startswith("dagster=="))
    version = dagster_pin.split("==")[1]
    for path in (DOCS, HELM_VALUES):
        versions = set(re.findall(r"dagster/dagster --version (\S+)", path.read_text()))
        assert versions == {version}, path
