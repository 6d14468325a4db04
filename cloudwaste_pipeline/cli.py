"""``cloudwaste``: the command line for what operators do by hand.

cloudwaste db upgrade                 migrate the warehouse to the latest schema
cloudwaste stats                      the collection figures (JSON)
cloudwaste export --days 30           an ad-hoc export under ml_datasets/adhoc/
cloudwaste export --start 2026-10-01 --end 2026-10-31 --format parquet
cloudwaste record-action --user-id U --account-id A --provider aws \
    --resource-id ARN --action deleted
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from cloudwaste_pipeline import api


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudwaste", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    db = commands.add_parser("db", help="warehouse schema")
    db.add_argument("action", choices=["upgrade"])
    commands.add_parser("stats", help="collection figures as JSON")
    export = commands.add_parser("export", help="ad-hoc dataset export")
    export.add_argument("--days", type=int, default=90)
    export.add_argument("--start", type=date.fromisoformat)
    export.add_argument("--end", type=date.fromisoformat)
    export.add_argument(
        "--format", action="append", choices=["json", "csv", "parquet"], dest="formats"
    )
    export.add_argument("--output-dir")
    action = commands.add_parser("record-action", help="append one user action to the outbox")
    for name in ("user-id", "account-id", "resource-id"):
        action.add_argument(f"--{name}", required=True)
    action.add_argument("--provider", required=True, choices=["aws", "azure"])
    action.add_argument("--action", required=True, choices=["deleted", "ignored", "kept"])
    action.add_argument("--event-id")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "db":
            api.engine()
            print("warehouse schema is up to date")
        elif args.command == "stats":
            print(json.dumps(api.stats(), indent=2, default=str))
        elif args.command == "export":
            result = api.export_datasets(
                days=args.days,
                start=args.start,
                end=args.end,
                formats=tuple(args.formats or ("json", "csv", "parquet")),
                output_dir=args.output_dir,
            )
            for name, count in result.row_counts.items():
                print(f"{name}: {count} rows")
            print(f"files in {result.folder}; manifest {result.manifest}")
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
    except (ValueError, RuntimeError) as exc:
        print(f"cloudwaste: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
