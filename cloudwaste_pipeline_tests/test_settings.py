"""The settings registry: every value is parsed and checked where it is read.

A bad value of any kind (blank, not a number, out of range, huge, malformed URL or date) is a
``SettingError`` naming the variable and what it allows, never another exception and never a
silently different behaviour; a secret's value is never repeated. The README's table is the
registry's, and no module reads a ``CLOUDWASTE_*`` variable around the registry.
"""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cloudwaste_pipeline import api, settings
from cloudwaste_pipeline.defs.resources import WarehouseResource
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.setting_parsers import Integer
from cloudwaste_pipeline.settings import REGISTRY, SettingError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cloudwaste_pipeline"
INTEGERS = {name: s.parser for name, s in REGISTRY.items() if isinstance(s.parser, Integer)}
NOT_INTEGERS = ["", " ", "\t\n", "abc", "1e9", "1.5", "3.0", "0x10", "3_0", "٣٠", "nan", "inf"]
NOT_INTEGERS += ["30 days", "- 5", "--5", "+-5", "30\x00", "١"]


def read(name: str, value: str) -> object:
    return settings.get(name, {name: value})


def refused(name: str, value: str) -> str:
    """The message of the ``SettingError`` that reading ``value`` raises."""
    with pytest.raises(SettingError) as caught:
        read(name, value)
    message = str(caught.value)
    assert name in message and "\n" not in message
    return message


# --- integers -----------------------------------------------------------------------------------


def test_the_numeric_settings_are_the_retentions_and_the_scan_concurrency() -> None:
    assert set(INTEGERS) == {
        "CLOUDWASTE_RAW_RETENTION_DAYS",
        "CLOUDWASTE_ML_RETENTION_YEARS",
        "CLOUDWASTE_RUN_RETENTION_DAYS",
        "CLOUDWASTE_AWS_ACCOUNTS_AT_ONCE",
        "CLOUDWASTE_AZURE_ACCOUNTS_AT_ONCE",
    }
    assert INTEGERS["CLOUDWASTE_AWS_ACCOUNTS_AT_ONCE"].low == 1
    assert INTEGERS["CLOUDWASTE_RAW_RETENTION_DAYS"].low == 3
    assert INTEGERS["CLOUDWASTE_ML_RETENTION_YEARS"].low == 1
    assert INTEGERS["CLOUDWASTE_RUN_RETENTION_DAYS"].low == 1


@pytest.mark.parametrize("name", sorted(INTEGERS))
@pytest.mark.parametrize("value", NOT_INTEGERS)
def test_a_numeric_setting_refuses_what_is_not_a_whole_number(name: str, value: str) -> None:
    message = refused(name, value)
    assert INTEGERS[name].allowed in message


@pytest.mark.parametrize("name", sorted(INTEGERS))
def test_a_numeric_setting_refuses_values_out_of_its_range(name: str) -> None:
    parser = INTEGERS[name]
    for value in (parser.low - 1, 0, -1, -parser.high, parser.high + 1, 10**9, 10**30):
        if not parser.low <= value <= parser.high:
            assert f"from {parser.low} to {parser.high}" in refused(name, str(value))
    assert "too large" in refused(name, "9" * 5000)  # no int() of 5000 digits either
    assert "below the minimum" in refused(name, "-" + "9" * 5000)


@pytest.mark.parametrize("name", sorted(INTEGERS))
def test_a_numeric_setting_accepts_its_range_and_is_its_default_when_unset(name: str) -> None:
    parser = INTEGERS[name]
    assert read(name, str(parser.low)) == parser.low
    assert read(name, f" {parser.high}\n") == parser.high  # a secrets file's newline is fine
    assert read(name, f"0{parser.low}") == parser.low
    assert settings.get(name, {}) == REGISTRY[name].default
    assert parser.low <= REGISTRY[name].default <= parser.high


@hypothesis_settings(derandomize=True, max_examples=200, deadline=None)
@given(
    name=st.sampled_from(sorted(INTEGERS)),
    text=st.one_of(st.text(), st.from_regex(r"\s*[+-]?[0-9]{0,6}(\.[0-9])?\s*", fullmatch=True)),
)
def test_any_text_is_an_in_range_number_or_a_setting_error(name: str, text: str) -> None:
    parser = INTEGERS[name]
    try:
        value = read(name, text)
    except SettingError as exc:
        assert name in str(exc)
    else:
        assert isinstance(value, int) and parser.low <= value <= parser.high
        assert int(text.strip()) == value


@hypothesis_settings(derandomize=True, max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(REGISTRY)), text=st.text())
def test_any_text_of_any_setting_parses_or_is_a_setting_error(name: str, text: str) -> None:
    try:
        read(name, text)
    except SettingError as exc:
        shown = " (value not shown" if REGISTRY[name].secret else "="
        assert str(exc).startswith(name + shown)


# --- run config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 2, 3651, True])
def test_a_run_config_retention_obeys_the_settings_range(value: int) -> None:
    with pytest.raises(SettingError, match=r"^run config raw_retention_days=.* from 3 to 3650"):
        settings.given_or_setting(
            "CLOUDWASTE_RAW_RETENTION_DAYS", value, "run config raw_retention_days"
        )


def test_a_run_config_left_out_uses_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "CLOUDWASTE_ML_RETENTION_YEARS"
    assert settings.given_or_setting(name, None, "x") == settings.DEFAULT_ML_RETENTION_YEARS
    assert settings.given_or_setting(name, 1, "x") == 1
    monkeypatch.setenv(name, "0")
    with pytest.raises(SettingError, match=name):
        settings.given_or_setting(name, None, "x")


# --- dates, URLs, paths, secrets ----------------------------------------------------------------


def test_the_clock_is_an_iso_moment_in_a_sane_window() -> None:
    name = "CLOUDWASTE_NOW"
    assert read(name, "2026-11-16") == datetime(2026, 11, 16, tzinfo=UTC)
    assert read(name, "2026-11-16T09:00:00+01:00") == datetime(2026, 11, 16, 8, tzinfo=UTC)
    assert settings.get(name, {name: ""}) is None  # empty: the wall clock
    for bad in ("1999-12-31", "2100-01-01", "0001-01-01", "9999-12-31T23:59:59-23:59"):
        assert "from 2000-01-01 to 2100-01-01" in refused(name, bad)
    for bad in (" ", "yesterday", "2026-13-01", "2026-11-16T25:00", "1700000000"):
        assert "ISO date" in refused(name, bad)


@pytest.mark.parametrize("name", ["CLOUDWASTE_ACTIONS_S3_URI", "CLOUDWASTE_EXPORTS_S3_URI"])
def test_an_s3_setting_is_an_s3_uri(name: str) -> None:
    assert read(name, "s3://bucket/prefix/") == "s3://bucket/prefix/"
    assert settings.get(name, {name: ""}) is None  # empty: not configured
    for bad in (" ", "bucket/prefix", "http://bucket/x", "s3://", "s3:///x", "s3://b/p?x=1"):
        assert "s3://" in refused(name, bad)
    assert "s3://" in refused(name, "s3://bucket/new\nline")


@pytest.mark.parametrize(
    "name",
    [
        "CLOUDWASTE_ALERT_WEBHOOK_URL",
        "CLOUDWASTE_AZURE_ARM_ENDPOINT",
        "CLOUDWASTE_AZURE_METRICS_ENDPOINT",
        "CLOUDWASTE_AZURE_LOGS_ENDPOINT",
    ],
)
def test_a_web_setting_is_an_http_url(name: str) -> None:
    assert read(name, "https://example.test/x") == "https://example.test/x"
    for bad in ("example.test", "ftp://example.test", "https://", "https://a b", "http://[::1"):
        refused(name, bad)


def test_secrets_are_never_repeated_in_a_message() -> None:
    cases = {
        "CLOUDWASTE_DATABASE_URL": "mysql://admin:hunter2-secret@db:3306/cw",
        "CLOUDWASTE_ANONYMIZATION_KEY": "short-hunter2",
        "CLOUDWASTE_ALERT_WEBHOOK_URL": "hooks.example/T0/hunter2-secret",
        "CLOUDWASTE_ACCOUNTS_DATABASE_URL": "mysql://app:hunter2-secret@db/app",
    }
    for name, value in cases.items():
        assert "hunter2" not in refused(name, value)
    assert "hunter2" not in refused("CLOUDWASTE_DATABASE_URL", "postgresql://u:hunter2@h:x/db")
    url = "postgresql+psycopg2://u:pw@h:5432/db"
    assert read("CLOUDWASTE_DATABASE_URL", url) == url
    assert read("CLOUDWASTE_DATABASE_URL", "sqlite:///x/warehouse.db") == "sqlite:///x/warehouse.db"


def test_a_non_secret_bad_value_is_shown_cut_and_escaped() -> None:
    message = refused("CLOUDWASTE_RAW_RETENTION_DAYS", "x" * 500 + "\n")
    assert "x" * 30 in message and "x" * 100 not in message


def test_paths_refuse_blank_and_control_characters() -> None:
    for name in ("CLOUDWASTE_HOME", "CLOUDWASTE_ACCOUNTS_FILE", "CLOUDWASTE_ACTIONS_INBOX"):
        assert read(name, "/srv/cloudwaste") == "/srv/cloudwaste"
        refused(name, "   ")
        refused(name, "/srv/a\x00b")


def test_crash_points_are_a_list_of_names() -> None:
    assert read("CLOUDWASTE_FAULT_CRASH_AT", "export.publish,inbox.move") == (
        "export.publish",
        "inbox.move",
    )
    assert settings.get("CLOUDWASTE_FAULT_CRASH_AT", {}) == ()
    refused("CLOUDWASTE_FAULT_CRASH_AT", "export.publish,,")


def test_the_azure_defaults_shown_are_the_scanners() -> None:
    from cloudwaste_pipeline.scanning.azure import Endpoints

    default = Endpoints()
    for field in ("arm", "metrics", "logs"):
        shown = REGISTRY[f"CLOUDWASTE_AZURE_{field.upper()}_ENDPOINT"].shown_default
        assert shown == f"`{getattr(default, field)}`"


# --- the account sources ------------------------------------------------------------------------


def test_the_accounts_query_is_one_select_statement() -> None:
    name = "CLOUDWASTE_ACCOUNTS_QUERY"
    assert read(name, " SELECT name FROM t;\n") == "SELECT name FROM t"
    assert (
        read(name, "with x as (select 1) select * from x") == "with x as (select 1) select * from x"
    )
    for bad in ("DELETE FROM t", "SELECT 1; DELETE FROM t", "SELECT ';'", "   ", "selectx", "x"):
        assert "(value not shown" in refused(name, bad)  # the query may hold ids


def test_the_organizations_settings_are_checked() -> None:
    parents = "CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS"
    assert read(parents, "r-ab12, ou-ab12-34567890,r-ab12") == ("r-ab12", "ou-ab12-34567890")
    for bad in ("123456789012", "ou-ab12", "r-AB12", "r-ab12,,ou-ab12-34567890"):
        refused(parents, bad)
    role = "CLOUDWASTE_ACCOUNTS_AWS_ORG_ROLE_NAME"
    assert read(role, "team/CloudWasteReadOnly") == "team/CloudWasteReadOnly"
    for bad in ("a b", "arn:aws:iam::123456789012:role/x", "r" * 65, "rôle"):
        refused(role, bad)
    regions = "CLOUDWASTE_ACCOUNTS_AWS_ORG_REGIONS"
    assert read(regions, "us-east-1, eu-west-1") == ("us-east-1", "eu-west-1")
    for bad in ("eastus", "us-east-1,us-east-1", "us-east-1,"):
        refused(regions, bad)
    flag = "CLOUDWASTE_ACCOUNTS_AWS_ORG_REAL_COSTS"
    assert (read(flag, "True"), read(flag, "false"), settings.get(flag, {})) == (True, False, None)
    refused(flag, "yes")
    owner = "CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER_USER_ID"
    assert "user-4242" not in refused(owner, "user-4242\x00")  # a user id is never repeated


def test_a_half_configured_source_is_refused_with_the_missing_setting() -> None:
    url, query = "CLOUDWASTE_ACCOUNTS_DATABASE_URL", "CLOUDWASTE_ACCOUNTS_QUERY"
    with pytest.raises(SettingError, match=f"{url} is set but {query} is not"):
        settings.validate_all({url: "sqlite:///app.db"})
    with pytest.raises(SettingError, match=f"{query} is set but {url} is not"):
        settings.validate_all({query: "SELECT 1"})
    with pytest.raises(SettingError, match="ROLE_NAME and CLOUDWASTE_ACCOUNTS_AWS_ORG_OWNER"):
        settings.validate_all({"CLOUDWASTE_ACCOUNTS_AWS_ORG_PARENTS": "r-ab12"})
    settings.validate_all({url: "sqlite:///app.db", query: "SELECT 1"})


# --- every setting checked before data is touched -----------------------------------------------


def test_validate_all_names_every_bad_setting() -> None:
    settings.validate_all({})
    with pytest.raises(SettingError) as caught:
        settings.validate_all(
            {"CLOUDWASTE_RAW_RETENTION_DAYS": "-1", "CLOUDWASTE_EXPORTS_S3_URI": "bucket"}
        )
    assert "CLOUDWASTE_RAW_RETENTION_DAYS" in str(caught.value)
    assert "CLOUDWASTE_EXPORTS_S3_URI" in str(caught.value)
    assert isinstance(caught.value, CloudWasteError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "open_warehouse",
    [api.engine, lambda url: WarehouseResource(database_url=url).engine()],
    ids=["api", "resource"],
)
def test_a_bad_setting_stops_before_the_warehouse_is_created(
    open_warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "warehouse" / "warehouse.db"
    monkeypatch.setenv("CLOUDWASTE_ML_RETENTION_YEARS", "0")
    with pytest.raises(SettingError, match="CLOUDWASTE_ML_RETENTION_YEARS"):
        open_warehouse(f"sqlite:///{database}")
    assert not database.parent.exists()


def test_reading_a_setting_happens_when_asked_not_at_import(monkeypatch) -> None:
    monkeypatch.setenv("CLOUDWASTE_NOW", "2031-05-06T07:08:09+00:00")
    assert settings.now() == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    monkeypatch.setenv("CLOUDWASTE_RUN_RETENTION_DAYS", "abc")
    with pytest.raises(SettingError, match="CLOUDWASTE_RUN_RETENTION_DAYS"):
        settings.run_retention_days()


# --- one registry: the code, the README and .env.example agree ----------------------------------


def names_in_the_package() -> set[str]:
    pattern = re.compile(r"\"(CLOUDWASTE_[A-Z0-9_]+)\"")
    return {n for p in PACKAGE.rglob("*.py") for n in pattern.findall(p.read_text())}


def test_every_setting_the_package_names_is_registered() -> None:
    assert names_in_the_package() == set(REGISTRY)


ENVIRON_READERS = {
    "settings.py",  # the registry
    "privacy/anonymize.py",  # load_key's own strict checks, declared in the registry
    "privacy/keyring.py",  # the key chain's own strict checks, declared in the registry
    "simulation/replay.py",  # saves and restores AWS_* around the simulated cloud
    "simulation/azure_fake.py",  # the same for the fake's CLOUDWASTE_AZURE_* and AZURE_*
}


def environ_reads(tree: ast.AST) -> list[int]:
    """Lines reading ``os.environ.get(...)``, ``os.environ[...]`` or ``os.getenv(...)``."""

    def reads(node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            return ast.unparse(node.func) in ("os.environ.get", "os.getenv")
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            return ast.unparse(node.value) == "os.environ"
        return False

    return [node.lineno for node in ast.walk(tree) if reads(node)]


def test_no_module_reads_the_environment_around_the_registry() -> None:
    readers = {
        str(p.relative_to(PACKAGE)): environ_reads(ast.parse(p.read_text()))
        for p in PACKAGE.rglob("*.py")
    }
    sample = "os.environ.get('A')\nos.getenv('B')\nos.environ['C']\nos.environ['D'] = '1'"
    assert environ_reads(ast.parse(sample)) == [1, 2, 3]  # the detector sees reads, not writes
    assert {p for p, lines in readers.items() if lines} <= ENVIRON_READERS, readers


def readme_table() -> str:
    section = (ROOT / "README.md").read_text().split("\n## Configuration\n", 1)[1]
    lines = section.split("\n## ", 1)[0].splitlines()
    start = lines.index(settings.markdown_table().splitlines()[0])
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def test_the_readme_table_is_the_registry() -> None:
    assert readme_table() == settings.markdown_table(), (
        "README.md's configuration table differs from the registry: paste the output of "
        "`python -m cloudwaste_pipeline.settings`"
    )


def test_the_table_names_each_setting_with_its_default_and_range() -> None:
    rows = {
        m.group(1): line
        for line in settings.markdown_table().splitlines()
        if (m := re.match(r"\| `(\w+)` \|", line))
    }
    assert set(rows) == set(REGISTRY)
    assert "| 30 | an integer from 3 to 3650 (days) |" in rows["CLOUDWASTE_RAW_RETENTION_DAYS"]
    assert "| 3 | an integer from 1 to 50 (years) |" in rows["CLOUDWASTE_ML_RETENTION_YEARS"]


def test_the_values_env_example_offers_are_allowed() -> None:
    """A deployment copying .env.example (dummies replaced) starts with valid settings."""
    from cloudwaste_pipeline_tests.test_deployment import ENV_EXAMPLE, read_env_file

    offered = {k: v for k, v in read_env_file(ENV_EXAMPLE).items() if k in REGISTRY}
    assert "CLOUDWASTE_RAW_RETENTION_DAYS" in offered
    settings.validate_all(offered)
