"""The warehouse knows its anonymization key: a run or API call with another key stops before
writing, two first writers agree, and a rotation re-keys every hash so the old and new scans of
one resource keep one hash (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cloudwaste_pipeline import api
from cloudwaste_pipeline.defs.assets.actions import user_action_patterns
from cloudwaste_pipeline.defs.assets.scans import (
    cloudwatch_metrics_history,
    ml_training_data,
    resource_lifecycle_events,
)
from cloudwaste_pipeline.defs.partitions import scan_key
from cloudwaste_pipeline.defs.resources import (
    AnonymizerResource,
    CloudResource,
    WarehouseResource,
)
from cloudwaste_pipeline.privacy import keyring, rotation
from cloudwaste_pipeline.privacy.anonymize import KEY_ENV_VAR, KeyChain, hash_id
from cloudwaste_pipeline.privacy.keyring import PREVIOUS_KEYS_ENV_VAR, KeyMismatchError
from cloudwaste_pipeline.scanning.model import Detection, RawScan, Resource
from cloudwaste_pipeline.warehouse import queries, schema
from cloudwaste_pipeline.warehouse.engine import _create

K1, K2, K3 = (f"keyring-test-key-{n}-0123456789abcdef" for n in (1, 2, 3))
ALIAS = "prod-main"
ACCOUNT = "123456789012"
OWNER = "user-42"
DAY = date(2026, 11, 10)
NOW = datetime(2026, 11, 12, 1, 0, tzinfo=UTC)
DERIVED = [ml_training_data, resource_lifecycle_events, cloudwatch_metrics_history]
HASHED_TABLES = [t for t, _ in rotation.hash_columns()]


def arn(n: int) -> str:
    return f"arn:aws:ec2:us-east-1:{ACCOUNT}:volume/vol-{n:017x}"


def detection(n: int) -> dict[str, Any]:
    resource = Resource(
        provider="aws",
        account_id=ACCOUNT,
        region="us-east-1",
        resource_type="ebs_volume",
        resource_id=arn(n),
        state="available",
        created_at=datetime(2026, 9, 1, tzinfo=UTC),
        config={"size_gb": 100, "volume_type": "gp3"},
        cost_monthly=8.0,
        cost_source="aws-price-table-2025",
        metrics={"VolumeReadOps": [("2026-11-09", 0.0), ("2026-11-10", 0.0)]},
    )
    when = datetime.combine(DAY, datetime.min.time(), UTC) + timedelta(hours=1)
    return Detection(resource, "unattached_volume", "high", "why", when).to_json()


@pytest.fixture
def home(tmp_path: Path, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A warehouse (both databases) holding one stored raw scan of ``DAY``, an accounts file,
    and the API pointed at both with key ``K1``."""
    accounts = tmp_path / "accounts.yaml"
    accounts.write_text(
        f"accounts:\n  - name: {ALIAS}\n    provider: aws\n    owner_user_id: {OWNER}\n"
        f'    account_id: "{ACCOUNT}"\n    regions: [us-east-1]\n'
    )
    for name, value in {
        "CLOUDWASTE_HOME": str(tmp_path),
        "CLOUDWASTE_DATABASE_URL": url(engine),
        "CLOUDWASTE_ACCOUNTS_FILE": str(accounts),
        "CLOUDWASTE_NOW": NOW.isoformat(),
        KEY_ENV_VAR: K1,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(PREVIOUS_KEYS_ENV_VAR, raising=False)
    scan = RawScan("aws", ACCOUNT, DAY, NOW, 3, 24.0, {"us-east-1": 24.0}, [])
    scan.detections = [detection(n) for n in range(3)]
    with engine.begin() as conn:
        queries.store_raw_scan(conn, ALIAS, scan)
    yield engine


def url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def derive(engine: Engine, key: str, previous: str | None = None) -> dg.ExecuteInProcessResult:
    """Re-derive ``DAY`` of the account from its stored raw scan, with ``key``."""
    instance = dg.DagsterInstance.ephemeral()
    return dg.materialize(
        DERIVED,
        partition_key=scan_key(DAY, ALIAS),
        instance=instance,
        resources=resources(engine, key, previous),
        raise_on_error=False,
    )


def resources(engine: Engine, key: str, previous: str | None = None) -> dict[str, Any]:
    return {
        "warehouse": WarehouseResource(database_url=url(engine)),
        "anonymizer": AnonymizerResource(key=key, previous_keys=previous),
        "cloud": CloudResource(),
    }


def counts(engine: Engine) -> dict[str, int]:
    tables = [*HASHED_TABLES, schema.quarantine, schema.resource_action_events]
    with engine.connect() as conn:
        return {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in tables
        }


def hashes(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every hash column of every table: the sorted rows of hash values."""
    with engine.connect() as conn:
        return {
            table.name: sorted((tuple(r) for r in conn.execute(sa.select(*columns))), key=repr)
            for table, columns in rotation.hash_columns()
        }


def mismatch(result: dg.ExecuteInProcessResult) -> bool:
    """The run failed on a ``KeyMismatchError``."""
    failures = [e for e in result.all_events if e.is_step_failure]
    return bool(failures) and all(
        "KeyMismatchError" in str(e.step_failure_data.error) for e in failures
    )


# ---- the key check ------------------------------------------------------------------------


def test_the_first_write_records_a_fingerprint_never_the_key(engine: Engine) -> None:
    current = keyring.ensure_key(engine, K1.encode())

    with engine.connect() as conn:
        recorded = keyring.history(conn)
        stored = str(conn.execute(sa.select(schema.anonymization_keys)).all())
    assert [(e.epoch, e.method) for e in recorded] == [(1, "initial")] and current == recorded[0]
    assert recorded[0].fingerprint == keyring.fingerprint(K1.encode())
    assert K1 not in stored and K1.encode().hex() not in stored
    assert keyring.ensure_key(engine, K1.encode()) == current  # the same key: nothing added


def test_another_key_is_refused_with_a_sentence_and_nothing_recorded(engine: Engine) -> None:
    keyring.ensure_key(engine, K1.encode())

    with pytest.raises(KeyMismatchError) as refused:
        keyring.ensure_key(engine, K2.encode())

    message = str(refused.value)
    assert K1 not in message and K2 not in message
    assert keyring.fingerprint(K1.encode())[:12] in message and "rotate-key" in message
    with engine.connect() as conn:
        assert len(keyring.history(conn)) == 1


def test_rederiving_a_partition_with_another_key_fails_and_writes_nothing(home: Engine) -> None:
    assert derive(home, K1).success
    before, rows = counts(home), hashes(home)
    assert before["ml_training_data"] == 3

    result = derive(home, K2)

    assert not result.success and mismatch(result)
    assert counts(home) == before and hashes(home) == rows


def test_the_action_batch_with_another_key_fails_and_writes_nothing(home: Engine) -> None:
    assert derive(home, K1).success
    api.record_user_action(
        user_id=OWNER, account_id=ACCOUNT, provider="aws", resource_id=arn(1), action="deleted"
    )
    before = counts(home)

    result = dg.materialize(
        [user_action_patterns], resources=resources(home, K2), raise_on_error=False
    )

    assert not result.success and mismatch(result)
    assert counts(home) == before
    with home.connect() as conn:
        pending = conn.execute(sa.select(schema.resource_action_events.c.processed_at)).all()
    assert pending == [(None,)]


def test_api_calls_with_another_key_refuse_before_writing(
    home: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.set_user_preferences(OWNER, industry="retail", consent=True)
    before = counts(home)
    monkeypatch.setenv(KEY_ENV_VAR, K2)

    with pytest.raises(KeyMismatchError):
        api.set_user_preferences("user-7", consent=True)
    with pytest.raises(KeyMismatchError):  # would erase nothing and report success
        api.erase(account_id=ACCOUNT, reason="ticket-1")
    with pytest.raises(KeyMismatchError):
        api.erase(user_id=OWNER)

    assert counts(home) == before


def test_two_first_writers_racing_agree_on_one_key(engine: Engine, monkeypatch) -> None:
    """Both see no history and both insert: one epoch 1 survives and the other writer's key is
    refused, whichever wins."""
    both_checked = threading.Barrier(2, timeout=30)
    insert = keyring._insert_if_absent

    def insert_after_both_checked(conn: sa.Connection, row: dict[str, Any]) -> None:
        both_checked.wait()
        insert(conn, row)

    monkeypatch.setattr(keyring, "_insert_if_absent", insert_after_both_checked)
    outcomes: dict[str, str] = {}

    def write(key: str) -> None:
        try:
            keyring.ensure_key(engine, key.encode())
            outcomes[key] = "recorded"
        except KeyMismatchError:
            outcomes[key] = "refused"

    threads = [threading.Thread(target=write, args=(k,)) for k in (K1, K2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes.values()) == ["recorded", "refused"]
    winner = next(k for k, v in outcomes.items() if v == "recorded")
    with engine.connect() as conn:
        assert [e.fingerprint for e in keyring.history(conn)] == [
            keyring.fingerprint(winner.encode())
        ]


def test_previous_keys_on_a_warehouse_without_history_are_refused(engine: Engine) -> None:
    with pytest.raises(KeyMismatchError, match=PREVIOUS_KEYS_ENV_VAR):
        keyring.ensure_key(engine, KeyChain(K2.encode(), [K1.encode()]))


# ---- rotation -----------------------------------------------------------------------------


def use_chain(monkeypatch: pytest.MonkeyPatch, current: str, *previous: str) -> None:
    monkeypatch.setenv(KEY_ENV_VAR, current)
    monkeypatch.setenv(PREVIOUS_KEYS_ENV_VAR, ",".join(previous))


def test_rotation_rekeys_every_hash_and_new_scans_land_on_them(
    home: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.set_user_preferences(OWNER, industry="retail", consent=True)
    assert derive(home, K1).success
    api.record_user_action(
        user_id=OWNER, account_id=ACCOUNT, provider="aws", resource_id=arn(1), action="deleted"
    )
    assert dg.materialize([user_action_patterns], resources=resources(home, K1)).success
    api.erase(account_id="210987654321", reason="another account's tombstone")
    before, old = counts(home), hashes(home)
    monkeypatch.setattr(rotation, "_BATCH", 2)  # several batches of the old -> new map

    report = api.rotate_key(K2)

    assert report.epoch == 2 and report.rows_rewritten["ml_training_data"] == 3
    assert counts(home) == before

    def rekey(value: str) -> str:
        return rotation.rekey_hash(value, K2.encode())

    rekeyed = {
        table: sorted((tuple(v and rekey(v) for v in row) for row in rows), key=repr)
        for table, rows in old.items()
    }
    assert hashes(home) == rekeyed
    assert {t for t, rows in rekeyed.items() if rows} >= {
        "ml_training_data",
        "resource_lifecycle_events",
        "cloudwatch_metrics_history",
        "user_action_patterns",
        "user_preferences",
        "erasure_tombstones",
    }
    with home.connect() as conn:
        assert [(e.epoch, e.method) for e in keyring.history(conn)] == [
            (1, "initial"),
            (2, "rekey-hmac-of-hash"),
        ]

    # The new chain re-derives the day onto the re-keyed rows: replaced, not duplicated.
    assert derive(home, K2, previous=K1).success
    assert counts(home) == before and hashes(home) == rekeyed
    chain = KeyChain(K2.encode(), [K1.encode()])
    with home.connect() as conn:
        stored = set(conn.execute(sa.select(schema.ml_training_data.c.account_hash)).scalars())
    assert stored == {hash_id("account", "aws", ACCOUNT, chain)}

    # An erasure by raw id (as typed, with stray whitespace) still finds the rows.
    use_chain(monkeypatch, K2, K1)
    erased = api.erase(account_id=f" {ACCOUNT} ", reason="ticket-2")
    assert erased.removed["ml_training_data"] == 3
    assert counts(home)["ml_training_data"] == 0


def test_after_a_rotation_the_old_key_or_a_broken_chain_is_refused(
    home: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert derive(home, K1).success
    api.rotate_key(K2)
    before = counts(home)

    assert mismatch(derive(home, K1))  # the old key alone
    assert mismatch(derive(home, K2, previous=K3))  # a wrong chain
    for chain in ((K1,), (K2,), (K2, K3), (K1, K2)):
        use_chain(monkeypatch, *chain)
        with pytest.raises(KeyMismatchError):
            api.set_user_preferences(OWNER, consent=True)
    assert counts(home) == before


def test_rotating_from_a_wrong_key_or_to_a_used_one_changes_nothing(
    home: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert derive(home, K1).success
    old = hashes(home)

    monkeypatch.setenv(KEY_ENV_VAR, K3)
    with pytest.raises(KeyMismatchError):
        api.rotate_key(K2)
    monkeypatch.setenv(KEY_ENV_VAR, K1)
    with pytest.raises(ValueError, match="epoch 1"):
        api.rotate_key(f"  {K1}\n")

    assert hashes(home) == old
    with home.connect() as conn:
        assert len(keyring.history(conn)) == 1


def test_a_writer_that_checked_before_a_rotation_cannot_commit_after_it(engine: Engine) -> None:
    """A run checks its key, another process rotates, the run's next write is refused at commit
    instead of adding old-space hashes to the re-keyed warehouse."""
    keyring.ensure_key(engine, K1.encode())
    other_process = _create(url(engine))
    try:
        rotation.rotate(other_process, K1.encode(), K2.encode(), NOW)
    finally:
        other_process.dispose()
    row = {"user_hash": "ab" * 32, "data_retention_years": 3, "updated_at": NOW}

    with pytest.raises(KeyMismatchError, match="re-keyed"), engine.begin() as conn:
        conn.execute(schema.user_preferences.insert().values(**row))

    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count(schema.user_preferences.c.id))).scalar() == 0


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)  # rotation runs on both
def test_the_cli_rotates_from_a_key_file_and_prints_no_key(
    home: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cloudwaste_pipeline import cli

    api.set_user_preferences(OWNER, consent=True)  # records epoch 1
    key_file = tmp_path / "new.key"
    key_file.write_text(K2 + "\n")

    assert cli.main(["rotate-key", "--new-key-file", str(key_file)]) == 0
    out = capsys.readouterr().out
    assert '"epoch": 2' in out and K1 not in out and K2 not in out
    assert cli.main(["rotate-key", "--new-key-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the new key" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)  # rotation runs on both
def test_an_export_manifest_records_the_key_epoch(home: Engine, tmp_path: Path) -> None:
    import json

    assert derive(home, K1).success
    api.rotate_key(K2)

    result = api.export_datasets(start=DAY, end=DAY, formats=("csv",), output_dir=tmp_path / "x")

    manifest = json.loads(Path(result.manifest).read_text())
    assert manifest["anonymization_key"] == {
        "epoch": 2,
        "fingerprint": keyring.fingerprint(K2.encode()),
    }


def test_the_previous_keys_setting_is_read_in_order_and_checked() -> None:
    env = {KEY_ENV_VAR: K3, PREVIOUS_KEYS_ENV_VAR: f" {K1} ,{K2},"}
    assert keyring.load_keychain(env) == KeyChain(K3.encode(), [K1.encode(), K2.encode()])
    with pytest.raises(ValueError, match=PREVIOUS_KEYS_ENV_VAR):
        keyring.load_keychain({KEY_ENV_VAR: K3, PREVIOUS_KEYS_ENV_VAR: "short"})


def test_an_upgraded_warehouse_adopts_only_the_key_its_rows_were_written_with(
    home: Engine,
) -> None:
    """Rows written before migration 0005 recorded any key: the raw store tells which key made
    them, so a first writer with another key is refused rather than recorded as epoch 1."""
    assert derive(home, K1).success
    with home.begin() as conn:
        conn.execute(schema.anonymization_keys.delete())  # as before migration 0005
    rows = hashes(home)

    assert mismatch(derive(home, K2))
    with home.connect() as conn:
        assert keyring.history(conn) == []
    assert derive(home, K1).success
    assert hashes(home) == rows
    with home.connect() as conn:
        assert [e.fingerprint for e in keyring.history(conn)] == [keyring.fingerprint(K1.encode())]


@pytest.mark.parametrize("engine", ["postgres"], indirect=True)  # a child process: costly
def test_a_rotation_killed_before_it_commits_leaves_the_warehouse_as_it_was(
    home: Engine, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from cloudwaste_pipeline.faults import CRASH_ENV, CRASH_EXIT_CODE

    assert derive(home, K1).success
    old = hashes(home)
    key_file = tmp_path / "new.key"
    key_file.write_text(K2)
    rotate = [sys.executable, "-m", "cloudwaste_pipeline.cli", "rotate-key"]
    env = {**os.environ, CRASH_ENV: "keyring.rotate.rewritten"}

    killed = subprocess.run([*rotate, "--new-key-file", str(key_file)], env=env, check=False)

    assert killed.returncode == CRASH_EXIT_CODE
    assert hashes(home) == old
    with home.connect() as conn:
        assert len(keyring.history(conn)) == 1
    assert api.rotate_key(K2).epoch == 2  # and the next attempt completes


def test_chain_at_gives_the_hash_space_of_an_earlier_epoch() -> None:
    chain = KeyChain(K3.encode(), [K1.encode(), K2.encode()])
    assert keyring.chain_at(chain, 1) == KeyChain(K1.encode())
    assert keyring.chain_at(chain, 2) == KeyChain(K2.encode(), [K1.encode()])
    assert keyring.chain_at(chain, 3) == chain
    with pytest.raises(ValueError):
        keyring.chain_at(chain, 4)


def test_an_erasure_after_a_rotation_finds_the_exports_made_before_it(
    home: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export published under epoch 1 holds epoch-1 hashes, which no re-keying can reach:
    the erasure searches it under every epoch's hashes instead of reporting it clean."""
    from cloudwaste_pipeline import settings
    from cloudwaste_pipeline.exports import LocalDestination, export_window

    assert derive(home, K1).success
    folder = settings.paths().exports / "weekly" / str(DAY)
    export_window(home, LocalDestination(folder), DAY, DAY, formats=("csv",))
    old_hash = hash_id("account", "aws", ACCOUNT, K1.encode())
    assert any(old_hash in p.read_text() for p in folder.glob("ml_training_data_*.csv"))
    api.rotate_key(K2)
    use_chain(monkeypatch, K2, K1)

    report = api.erase(account_id=ACCOUNT, reason="ticket-3")

    assert report.complete
    assert [f["rows_removed"] for f in report.exports.files_rewritten] == [3]
    assert not any(old_hash in p.read_text() for p in folder.iterdir() if p.is_file())
    assert old_hash not in str(report.as_dict())  # the report names the current hashes only
