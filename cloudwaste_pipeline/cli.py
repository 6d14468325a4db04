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
cloudwaste rotate-key --new-key-file FILE   re-key every stored hash (FILE "-": stdin)
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from tqdm import tqdm

from cloudwaste_pipeline import api
from cloudwaste_pipeline.errors import CloudWasteError
from cloudwaste_pipeline.exports import ExportProgress


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudwaste", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="warehouse schema")
    db.add_argument("action", choices=["upgrade"])
    commands.add_parser("stats", help="collection figures as JSON")
    export = commands.add_parser("export", help="ad-hoc dataset export")
    export.add_argument(
        "--last-days", "--days", type=int, dest="last_days", help="default 90 (without --start)"
    )
    export.add_argument("--start", type=date.fromisoformat)
    export.add_argument("--end", type=date.fromisoformat, help="default today")
    export.add_argument(
        "--format", action="append", choices=["json", "csv", "parquet"], dest="formats"
    )
    export.add_argument("--gzip", action="store_true", help=".json.gz, .csv.gz, gzip Parquet")
    export.add_argument("--output-dir")
    export.add_argument("--s3-uri", help="s3://bucket/prefix/ instead of local files")
    export.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    return parser


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
    args = _parser().parse_args(argv)
    try:
        if args.command == "db":
            api.engine()
            print("warehouse schema is up to date")
        elif args.command == "stats":
            print(json.dumps(api.stats(), indent=2, default=str))
        elif args.command == "export":
            with TqdmProgress(disable=args.no_progress) as progress:
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
        elif args.command == "rotate-key":
            rotated = api.rotate_key(_read_new_key(args.new_key_file))
            print(json.dumps(rotated.as_dict(), indent=2))
    except (ValueError, RuntimeError) as exc:
        print(f"cloudwaste: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
