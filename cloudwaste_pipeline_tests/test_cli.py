"""Every argument a person types: one line on stderr, ``cloudwaste: ...``, exit code 2, never a
traceback or a password; the API raises a ``CloudWasteError`` with the same sentence.

Bad windows (impossible dates, dates outside 2000-01-01 .. tomorrow, zero, negative or huge
``--last-days``, start after end), export folders that cannot be written (EACCES, ENOSPC
injected: the tests run as root), and database URLs that are malformed or unreachable, for every
subcommand that opens the warehouse.
"""

from __future__ import annotations

import errno
import io
import os
from datetime import date, datetime
from pathlib import Path

import pytest

from cloudwaste_pipeline import api, cli, exports
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import LocalDestination, resolve_window
from cloudwaste_pipeline.publish import CAUSES
from cloudwaste_pipeline.warehouse.engine import WarehouseUnavailable, dispose_engines

TODAY = date(2026, 12, 1)
PASSWORD = "s3cr3t-pw"
UNREACHABLE_URL = f"postgresql+psycopg2://cw:{PASSWORD}@127.0.0.1:1/warehouse"
MALFORMED_URLS = ["garbage", f"postgresql://cw:{PASSWORD}@db:notaport/x", "://"]
ACCOUNT_ID = "123456789012"


@pytest.fixture
def home(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLOUDWASTE_HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CLOUDWASTE_NOW", f"{TODAY}T12:00:00+00:00")
    monkeypatch.setenv("CLOUDWASTE_ANONYMIZATION_KEY", "k" * 64)
    return tmp_path


def one_error_line(capsys: pytest.CaptureFixture[str], code: int) -> str:
    """The single stderr line of a failed command, after checking what every failure promises."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("cloudwaste: ")
    assert "Traceback" not in err and PASSWORD not in err and ACCOUNT_ID not in err
    return lines[0]


# --- export windows -----------------------------------------------------------------------------

BAD_WINDOWS = [
    (["--start", "2026-13-01"], {"start": "2026-13-01"}, "is not a date"),
    (["--end", "2026-02-30"], {"end": "2026-02-30"}, "is not a date"),
    (["--last-days", "0"], {"last_days": 0}, "last_days must be between 1 and"),
    (["--last-days", "-5"], {"last_days": -5}, "last_days must be between 1 and"),
    (["--last-days", "1000000000"], {"last_days": 1_000_000_000}, "last_days must be between"),
    (["--start", "0001-01-01"], {"start": date(1, 1, 1)}, "outside 2000-01-01"),
    (["--start", "1999-12-31"], {"start": date(1999, 12, 31)}, "outside 2000-01-01"),
    (["--start", "9999-12-31"], {"start": date(9999, 12, 31)}, "outside 2000-01-01"),
    (["--end", "9999-12-31"], {"end": date(9999, 12, 31)}, "outside 2000-01-01"),
    (["--last-days", "5", "--end", "0001-01-01"], {"last_days": 5, "end": "0001-01-01"}, "outside"),
    (
        ["--start", "2026-11-02", "--end", "2026-11-01"],
        {"start": date(2026, 11, 2), "end": date(2026, 11, 1)},
        "start 2026-11-02 is after end 2026-11-01",
    ),
    (
        ["--last-days", "7", "--start", "2026-11-01"],
        {"last_days": 7, "start": "2026-11-01"},
        "not both",
    ),
]


@pytest.mark.parametrize(("argv", "kwargs", "message"), BAD_WINDOWS)
def test_a_bad_window_is_one_sentence_from_the_cli_and_the_api(
    home: Path, capsys: pytest.CaptureFixture[str], argv, kwargs, message
):
    out = home / "exports"
    with pytest.raises(CloudWasteError, match=message) as info:
        api.export_datasets(output_dir=out, **kwargs)
    line = one_error_line(capsys, cli.main(["export", *argv, "--output-dir", str(out)]))
    assert line == f"cloudwaste: {info.value}"
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "kwargs",
    [
        {"last_days": 7.5},
        {"last_days": True},
        {"last_days": "30"},
        {"days": 0},
        {"last_days": 7, "days": 30},
        {"start": 20261101},
        {"formats": ("xml",)},
        {"formats": ()},
        {"formats": 5},
        {"formats": [["json"]]},
        {"compression": "zip"},
    ],
)
def test_the_api_refuses_bad_export_arguments_before_touching_anything(home: Path, kwargs):
    out = home / "exports"
    with pytest.raises(CloudWasteError):
        api.export_datasets(output_dir=out, **kwargs)
    assert not out.exists()


@pytest.mark.parametrize(
    ("last_days", "start", "end", "window"),
    [
        (None, None, None, (date(2026, 9, 3), TODAY)),  # the default: 90 days
        (1, None, None, (TODAY, TODAY)),
        ((TODAY - date(2000, 1, 1)).days + 1, None, None, (date(2000, 1, 1), TODAY)),
        (None, "2026-11-01", "2026-12-02", (date(2026, 11, 1), date(2026, 12, 2))),  # tomorrow
        (None, datetime(2026, 11, 1, 8), None, (date(2026, 11, 1), TODAY)),
        (3, None, date(2026, 11, 10), (date(2026, 11, 8), date(2026, 11, 10))),
    ],
)
def test_good_windows_resolve_as_before(last_days, start, end, window):
    assert resolve_window(last_days, start, end, today=TODAY) == window


def test_the_cli_still_exports_a_good_window(home: Path, capsys: pytest.CaptureFixture[str]):
    out = home / "exports"
    assert cli.main(["export", "--last-days", "2", "--no-progress", "--output-dir", str(out)]) == 0
    assert "ml_training_data: 0 rows" in capsys.readouterr().out
    assert (out / "adhoc" / f"2026-11-30_{TODAY}").is_dir()


# --- the export folder --------------------------------------------------------------------------


def _refuse(error: int):
    def fail(*_args: object, **_kwargs: object) -> None:
        raise OSError(error, os.strerror(error))

    return fail


@pytest.mark.parametrize(
    ("method", "error"),
    [("staging", errno.EACCES), ("staging", errno.ENOSPC), ("publish", errno.ENOSPC)],
)
def test_an_export_folder_that_cannot_be_written_is_one_sentence(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, method, error
):
    """Root ignores file modes, so the errors are injected where the destination writes."""
    monkeypatch.setattr(LocalDestination, method, _refuse(error))
    out = home / "exports"
    reason = CAUSES[error]  # the exporter's own words for what the operator must fix
    with pytest.raises(CloudWasteError, match=f"cannot write the export to .*{reason}"):
        api.export_datasets(last_days=3, output_dir=out)
    line = one_error_line(capsys, cli.main(["export", "--no-progress", "--output-dir", str(out)]))
    assert line.startswith("cloudwaste: cannot write the export to ") and reason in line


def test_an_export_folder_under_a_file_is_one_sentence(
    home: Path, capsys: pytest.CaptureFixture[str]
):
    blocker = home / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["export", "--no-progress", "--output-dir", str(blocker / "exports")])
    assert CAUSES[errno.ENOTDIR] in one_error_line(capsys, code)


# --- the database URL ---------------------------------------------------------------------------

COMMANDS = [
    ["db", "upgrade"],
    ["stats"],
    ["export", "--last-days", "3", "--no-progress"],
    [
        "record-action",
        "--user-id=user-1",
        f"--account-id={ACCOUNT_ID}",
        "--provider=aws",
        f"--resource-id=arn:aws:ec2:us-east-1:{ACCOUNT_ID}:volume/vol-0123456789abcdef0",
        "--action=deleted",
    ],
    ["erase", f"--account-id={ACCOUNT_ID}"],
]


@pytest.mark.parametrize("url", [*MALFORMED_URLS, UNREACHABLE_URL, "mysql://cw:x@db/warehouse"])
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: argv[0])
def test_every_command_says_a_bad_database_url_in_one_line_without_the_password(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url, argv
):
    monkeypatch.setenv("CLOUDWASTE_DATABASE_URL", url)
    try:
        line = one_error_line(capsys, cli.main(argv))
    finally:
        dispose_engines(url)
    assert "warehouse" in line


def test_the_api_says_why_the_warehouse_is_unavailable_without_the_password():
    for url in MALFORMED_URLS:
        with pytest.raises(WarehouseUnavailable, match="is not a database URL") as info:
            api.engine(url)
        assert PASSWORD not in str(info.value)
    with pytest.raises(WarehouseUnavailable, match="not installed"):
        api.engine(f"mysql://cw:{PASSWORD}@db/warehouse")
    try:
        with pytest.raises(WarehouseUnavailable, match="cannot connect to the warehouse") as info:
            api.engine(UNREACHABLE_URL)
    finally:
        dispose_engines(UNREACHABLE_URL)
    assert "cw:***@127.0.0.1:1/warehouse" in str(info.value)
    assert PASSWORD not in str(info.value) and "\n" not in str(info.value)


# --- argparse and the catch-all -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nonsense"],
        ["export", "--last-days", "x"],
        ["export", "--format", "xml"],
        ["record-action", "--user-id", "u"],
        ["db", "downgrade"],
    ],
)
def test_argparse_errors_are_one_line_too(home: Path, capsys: pytest.CaptureFixture[str], argv):
    line = one_error_line(capsys, cli.main(argv))
    assert "--help" in line


def test_an_unexpected_error_is_one_scrubbed_line_and_debug_shows_the_traceback(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    def broken() -> None:
        raise KeyError(f"account {ACCOUNT_ID}")

    monkeypatch.setattr(api, "stats", broken)
    line = one_error_line(capsys, cli.main(["stats"]))
    assert line.startswith("cloudwaste: KeyError:") and "<account-id>" in line
    assert cli.main(["--debug", "stats"]) == 2
    assert "Traceback" in capsys.readouterr().err  # for the operator who asks for it


def test_window_errors_are_cloudwaste_errors_and_value_errors():
    """Callers that caught ``ValueError`` keep working."""
    with pytest.raises(ValueError, match="between 1 and"):
        exports.last_days_window(0, TODAY)


def test_the_launchpad_window_is_checked_the_same_way(monkeypatch: pytest.MonkeyPatch):
    """``adhoc_export_job``'s run config goes through the same ``resolve_window``."""
    from cloudwaste_pipeline.defs.adhoc_exports import AdhocExportConfig

    monkeypatch.setenv("CLOUDWASTE_NOW", f"{TODAY}T12:00:00+00:00")
    for config in ({"last_days": 0}, {"start": "0001-01-01"}, {"start": "2026-13-01"}):
        with pytest.raises(exports.WindowError):
            AdhocExportConfig(**config).window()
    assert AdhocExportConfig(start="", end="").window() == (date(2026, 9, 3), TODAY)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_so_a_failure_stays_one_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    out = home / "exports"
    monkeypatch.setattr(LocalDestination, "publish", _refuse(errno.ENOSPC))
    one_error_line(capsys, cli.main(["export", "--last-days", "2", "--output-dir", str(out)]))
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert cli.main(["export", "--last-days", "2", "--output-dir", str(out)]) == 2
    assert "ml_training_data" in terminal.getvalue()  # the bars, then the error line


def test_load_dataset_takes_text_dates_and_refuses_bad_ones(home: Path):
    assert api.load_dataset("ml_training_data", "2026-11-01", date.max).empty
    for bad in ({"start": "2026-13-01"}, {"end": 20261101}):
        with pytest.raises(CloudWasteError, match="date"):
            api.load_dataset("ml_training_data", **bad)
    with pytest.raises(CloudWasteError, match="unknown dataset"):
        api.load_dataset("nope")
