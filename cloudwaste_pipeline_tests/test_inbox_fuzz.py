"""The inbox reader under arbitrary input: whatever bytes a dropped file holds, a pass never
raises, and every non-blank line ends up as an outbox event (its own, or the identical event it
repeats) or as a quarantine row with its reason. Nothing is lost, on SQLite and PostgreSQL."""

import itertools
import json
import re
from pathlib import Path

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from cloudwaste_pipeline.inbox import ingest_folder, parse_line
from cloudwaste_pipeline.inbox.ingest import content_digest
from cloudwaste_pipeline.privacy.events import same_event
from cloudwaste_pipeline.warehouse import schema
from cloudwaste_pipeline_tests.test_events import NOW
from cloudwaste_pipeline_tests.test_events_fuzz import events
from cloudwaste_pipeline_tests.test_inbox import age

event_lines = st.tuples(events, st.sampled_from(["e1", "e2", "e3", None]), st.booleans()).map(
    lambda args: json.dumps(
        {**args[0], **({"event_id": args[1]} if args[1] else {})},
        default=str,
        ensure_ascii=args[2],
    ).encode("utf-8", "surrogatepass")
)
garbage_lines = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"   ", b"\r", b"\xef\xbb\xbf{}", b"[1]", b'{"a":1,"a":2}', b"[" * 5000]),
)
files = st.lists(st.one_of(event_lines, garbage_lines), max_size=8).flatmap(
    lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda end: end.join(lines))
)


def non_blank_lines(data: bytes) -> dict[int, bytes]:
    """Line number -> line: lines end at \\n; a leading byte-order mark is not content."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    return {n: line for n, line in enumerate(data.split(b"\n"), 1) if line.strip()}


def test_every_line_of_any_file_is_stored_or_quarantined(engine: Engine, tmp_path: Path):
    budget = 60 if engine.dialect.name == "sqlite" else 25
    numbers = itertools.count()

    @settings(
        derandomize=True,
        max_examples=budget,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(files)
    def check(data: bytes) -> None:
        inbox = tmp_path / f"inbox-{next(numbers)}"
        inbox.mkdir()
        (inbox / "drop.jsonl").write_bytes(data)
        age(inbox / "drop.jsonl")

        report = ingest_folder(engine, inbox, NOW)

        assert report.files == ["drop.jsonl"] and report.failed == report.skipped == {}
        pattern = re.compile(rf"drop\.jsonl#{content_digest(data)}:(\d+)")
        with engine.connect() as conn:
            refs = conn.execute(sa.select(schema.quarantine.c.source_ref)).scalars()
            bad_lines = {int(m.group(1)) for ref in refs if (m := pattern.fullmatch(ref))}
            stored = {
                r.event_id: r._mapping
                for r in conn.execute(sa.select(schema.resource_action_events))
            }
        for number, line in non_blank_lines(data).items():
            if number in bad_lines:
                continue
            row, reason = parse_line(line.decode("utf-8"), NOW)
            assert row is not None, reason
            assert same_event(stored[row["event_id"]], row)
        assert bad_lines <= set(non_blank_lines(data))

    check()
