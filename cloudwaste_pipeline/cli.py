"""``cloudwaste``: the command line for what operators do by hand.

cloudwaste db upgrade                 migrate the warehouse to the latest schema
cloudwaste stats                      the collection figures (JSON)
cloudwaste export --last-days 30      an ad-hoc export under ml_datasets/adhoc/<start>_<end>/
cloudwaste export --start 2026-10-01 --end 2026-10-31 --format parquet --gzip
cloudwaste export --last-days 90 --s3-uri s3://bucket/prefix/   (or CLOUDWASTE_EXPORTS_S3_URI)
cloudwaste record-action --user-id U --account-id A --provider aws \
    --resource-id ARN --action deleted
cloudwaste erase --account-id A [--provider aws] [--reason TICKET]
cloudwaste erase --user-id U      GDPR erasure; prints what was removed (hashes, counts)

A mistake (a bad argument, date or window, an unwritable folder, a database URL that is malformed
or unreachable) is one line on stderr, "cloudwaste: ...", and exit code 2; never a traceback, a
password or a raw id. cloudwaste --debug <command> also prints the traceback.
cloudwaste rotate-key --new-key-file FILE   re-key every stored hash (FILE "-": stdin)
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from typing import NoReturn

from tqdm import tqdm

from cloudwaste_pipeline import api
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import ExportProgress
from cloudwaste_pipeline.privacy.anonymize import scrub_text


class TqdmProgress(ExportProgress):
    """One tqdm bar per dataset (rows) and per upload (bytes), on stderr: stdout keeps only
    the summary lines, so it can be piped."""

    wants_totals = True

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self.bar: tqdm | None = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *_: object) -> None:
        self.end()

    def begin(self, label: str, total: int | None, unit: str) -> None:
        self.end()
        self.bar = tqdm(
            total=total,
            desc=label,
            unit=unit,
            unit_scale=unit == "B",
            file=sys.stderr,
            disable=self.disable,
            leave=True,
        )

    def advance(self, amount: int) -> None:
        if self.bar is not None:
            self.bar.update(amount)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class UsageError(CloudWasteError):
    """What argparse found wrong with the command line."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are raised, to be said in one line like every other error."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cloudwaste", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an error, also print the traceback (it may quote raw ids: for your terminal)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="warehouse schema")
    db.add_argument("action", choices=["upgrade"])
    commands.add_parser("stats", help="collection figures as JSON")
    export = commands.add_parser("export", help="ad-hoc dataset export")
    export.add_argument(
        "--last-days", "--days", type=int, dest="last_days", help="default 90 (without --start)"
    )
    export.add_argument("--start", help="YYYY-MM-DD, 2000-01-01 at the earliest")
    export.add_argument("--end", help="YYYY-MM-DD, default today")
    export.add_argument(
        "--format", action="append", choices=["json", "csv", "parquet"], dest="formats"
    )
    export.add_argument("--gzip", action="store_true", help=".json.gz, .csv.gz, gzip Parquet")
    export.add_argument("--output-dir")
    export.add_argument("--s3-uri", help="s3://bucket/prefix/ instead of local files")
    export.add_argument(
        "--no-progress", action="store_true", help="no progress bars (none unless on a terminal)"
    )
    action = commands.add_parser("record-action", help="append one user action to the outbox")
    for name in ("user-id", "account-id", "resource-id"):
        action.add_argument(f"--{name}", required=True)
    action.add_argument("--provider", required=True, choices=["aws", "azure"])
    action.add_argument("--action", required=True, choices=["deleted", "ignored", "kept"])
    action.add_argument("--event-id")
    erase = commands.add_parser("erase", help="GDPR erasure of a user and/or an account")
    erase.add_argument("--user-id")
    erase.add_argument("--account-id")
    erase.add_argument("--provider", default="aws", choices=["aws", "azure"])
    erase.add_argument("--reason", help="e.g. the ticket number (kept with the tombstone)")
    rotate = commands.add_parser(
        "rotate-key", help="re-key the warehouse's hashes to a new anonymization key"
    )
    rotate.add_argument(
        "--new-key-file",
        required=True,
        help='file holding the new key ("-": read it from stdin); never a command-line argument',
    )
    accounts = commands.add_parser(
        "scan-accounts",
        help="scan (today) or re-derive (past days) chosen accounts, one run per day and shard",
    )
    accounts.add_argument("--account", action="append", required=True, dest="accounts")
    accounts.add_argument("--start", help="YYYY-MM-DD, default today")
    accounts.add_argument("--end", help="YYYY-MM-DD, default --start")
    commands.add_parser("failures", help="accounts with an open failure, as JSON lines")
    shard = commands.add_parser("shard", help="the shard (partition) of each account alias")
    shard.add_argument("aliases", nargs="+")
    return parser


def error_line(exc: BaseException) -> str:
    """The error as one line of text, scrubbed of anything that looks like an id.

    Our own errors (``CloudWasteError``, and by this code base's habit any ``ValueError`` or
    ``RuntimeError``) are sentences already; for others (a file system or database error) the
    first line says what went wrong, the rest is detail (SQL, parameters) for --debug.
    """
    if isinstance(exc, ValueError | RuntimeError):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"
    return scrub_text(" ".join(text.split()))


def _fail(exc: BaseException, debug: bool = False) -> int:
    print(f"cloudwaste: {error_line(exc)}", file=sys.stderr)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    return 2


def _read_new_key(path: str) -> str:
    """The new key from a file or stdin: an argument would show in ``ps`` and shell history."""
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CloudWasteError(f"cannot read the new key from {path}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        return _fail(exc)
    if not args.debug:  # Dagster's notes on our use of its beta APIs are for developers
        warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")
    try:
        if args.command == "db":
            api.engine()
            print("warehouse schema is up to date")
        elif args.command == "stats":
            print(json.dumps(api.stats(), indent=2, default=str))
        elif args.command == "export":
            # Bars only on a terminal: piped or logged stderr keeps just the error line, if any.
            quiet = args.no_progress or not sys.stderr.isatty()
            with TqdmProgress(disable=quiet) as progress:
                result = api.export_datasets(
                    last_days=args.last_days,
                    start=args.start,
                    end=args.end,
                    formats=tuple(args.formats or ("json", "csv", "parquet")),
                    compression="gzip" if args.gzip else "none",
                    output_dir=args.output_dir,
                    s3_uri=args.s3_uri,
                    progress=progress,
                )
            for name, count in result.row_counts.items():
                print(f"{name}: {count} rows")
            print(f"files in {result.location}")
            print(f"manifest {result.manifest}")
        elif args.command == "record-action":
            event = api.record_user_action(
                user_id=args.user_id,
                account_id=args.account_id,
                provider=args.provider,
                resource_id=args.resource_id,
                action=args.action,
                event_id=args.event_id,
            )
            print(event)
        elif args.command == "erase":
            report = api.erase(
                user_id=args.user_id,
                account_id=args.account_id,
                provider=args.provider,
                reason=args.reason,
            )
            print(json.dumps(report.as_dict(), indent=2))
            if not report.complete:
                remaining = len(report.exports.remaining)
                print(
                    f"cloudwaste: erasure incomplete: {remaining} export item(s) could not be "
                    'rewritten or removed (listed under "remaining")',
                    file=sys.stderr,
                )
                return 1
        elif args.command == "scan-accounts":
            runs = api.scan_accounts(args.accounts, args.start, args.end)
            for run in runs.itertuples():
                failed = f", failed: {run.failed_accounts}" if run.failed_accounts else ""
                outcome = "ok" if run.success else "FAILED"
                print(f"{run.day} {run.shard} [{run.accounts}] run {run.run_id}: {outcome}{failed}")
            if not runs["success"].all() or runs["failed_accounts"].astype(bool).any():
                return 1
        elif args.command == "failures":
            for row in api.failing_accounts().to_dict("records"):
                print(json.dumps(row, default=str))
        elif args.command == "shard":
            for alias in args.aliases:
                print(f"{alias} {api.shard_of(alias)}")
        elif args.command == "rotate-key":
            rotated = api.rotate_key(_read_new_key(args.new_key_file))
            print(json.dumps(rotated.as_dict(), indent=2))
    except KeyboardInterrupt:
        print("cloudwaste: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, whatever it is: never a traceback, an id or a password
        return _fail(exc, args.debug)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
