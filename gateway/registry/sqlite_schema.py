"""The SQLite registry schema: ordered migrations, and splitting a migration into statements.

The alarm tables (schema v3) live in the same file as the registry; the
migrations are shared by :class:`~gateway.registry.sqlite_store.SqliteStore`
and :class:`~gateway.registry.sqlite_alarms.SqliteAlarmStore`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Final

from gateway.errors import StoreError

__all__ = ["MIGRATIONS", "split_statements"]

# Ordered schema migrations: MIGRATIONS[n - 1] takes the schema from version n-1 to n.
# Append only; never edit a released entry. Column names equal the model's field
# names (a test holds them together), which keeps row <-> value mapping trivial.
MIGRATIONS: Final[list[str]] = [
    # v1: the registry proper.
    """
    CREATE TABLE kindergarten (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        district_code TEXT NOT NULL,
        address       TEXT NOT NULL DEFAULT '',
        longitude     REAL,
        latitude      REAL
    );
    -- No foreign key to kindergarten: a device may register before its site is
    -- onboarded, and deleting a site must not silently rewrite device rows.
    CREATE TABLE device (
        id              TEXT PRIMARY KEY,
        kindergarten_id TEXT,
        district_code   TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        device_type     INTEGER NOT NULL DEFAULT 0,
        manufacturer    TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL DEFAULT '',
        firmware        TEXT NOT NULL DEFAULT '',
        transport       TEXT NOT NULL DEFAULT 'UDP',
        host            TEXT NOT NULL DEFAULT '',
        port            INTEGER NOT NULL DEFAULT 0,
        online          INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
        registered_at   REAL,
        expires         INTEGER NOT NULL DEFAULT 0,
        last_seen       REAL,
        channel_count   INTEGER NOT NULL DEFAULT 0,
        user_agent      TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE channel (
        id              TEXT PRIMARY KEY,
        device_id       TEXT NOT NULL REFERENCES device (id) ON DELETE CASCADE,
        kindergarten_id TEXT,
        district_code   TEXT NOT NULL,
        name            TEXT NOT NULL DEFAULT '',
        area            TEXT NOT NULL DEFAULT 'other',
        type_code       INTEGER NOT NULL DEFAULT 0,
        manufacturer    TEXT NOT NULL DEFAULT '',
        model           TEXT NOT NULL DEFAULT '',
        address         TEXT NOT NULL DEFAULT '',
        parent_id       TEXT NOT NULL DEFAULT '',
        online          INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1)),
        longitude       REAL,
        latitude        REAL,
        ptz_type        INTEGER,
        updated_at      REAL
    );
    -- Needed by the ON DELETE CASCADE and by replace_channels.
    CREATE INDEX channel_device ON channel (device_id);
    """,
    # v2: status history, and the indexes behind list filters and district counts.
    """
    CREATE TABLE status_event (
        seq       INTEGER PRIMARY KEY,
        entity_id TEXT NOT NULL,
        kind      TEXT NOT NULL,
        online    INTEGER NOT NULL CHECK (online IN (0, 1)),
        at        REAL NOT NULL,
        reason    TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX status_event_entity ON status_event (entity_id, at);
    CREATE INDEX status_event_at ON status_event (at);
    CREATE INDEX kindergarten_district ON kindergarten (district_code);
    CREATE INDEX device_district ON device (district_code, online);
    CREATE INDEX device_kindergarten ON device (kindergarten_id, online);
    CREATE INDEX device_online ON device (online);
    CREATE INDEX channel_district ON channel (district_code, online);
    CREATE INDEX channel_kindergarten ON channel (kindergarten_id, online);
    CREATE INDEX channel_online ON channel (online);
    CREATE INDEX channel_area ON channel (area, district_code);
    """,
    # v3: alarms, their outbox deliveries and their audit trail (gateway.registry.sqlite_alarms).
    """
    -- No foreign key to device or kindergarten: an alarm from an unregistered
    -- sender is still kept (sender_registered = 0), and the audit trail must
    -- survive the device being deleted.
    CREATE TABLE alarm (
        id                TEXT PRIMARY KEY,
        seq               INTEGER NOT NULL UNIQUE,
        dedupe_key        TEXT NOT NULL,
        device_id         TEXT NOT NULL,
        source_id         TEXT NOT NULL,
        kindergarten_id   TEXT,
        district_code     TEXT NOT NULL,
        priority          INTEGER,
        method            INTEGER,
        alarm_type        INTEGER,
        event_type        INTEGER,
        alarm_time        TEXT,
        description       TEXT NOT NULL DEFAULT '',
        longitude         REAL,
        latitude          REAL,
        sn                INTEGER NOT NULL,
        received_at       REAL NOT NULL,
        state             TEXT NOT NULL DEFAULT 'new',
        escalated_at      REAL,
        acknowledged_by   TEXT,
        acknowledged_at   REAL,
        resolved_by       TEXT,
        resolved_at       REAL,
        sender_registered INTEGER NOT NULL DEFAULT 1 CHECK (sender_registered IN (0, 1)),
        problems          TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX alarm_received ON alarm (received_at);
    CREATE INDEX alarm_district ON alarm (district_code, received_at);
    CREATE INDEX alarm_kindergarten ON alarm (kindergarten_id, received_at);
    CREATE INDEX alarm_state ON alarm (state);
    CREATE INDEX alarm_dedupe ON alarm (dedupe_key);
    CREATE TABLE alarm_delivery (
        alarm_id        TEXT NOT NULL REFERENCES alarm (id) ON DELETE CASCADE,
        sink            TEXT NOT NULL,
        event           TEXT NOT NULL,
        order_key       TEXT NOT NULL,
        seq             INTEGER NOT NULL,
        created_at      REAL NOT NULL,
        state           TEXT NOT NULL DEFAULT 'pending',
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error      TEXT NOT NULL DEFAULT '',
        delivered_at    REAL,
        PRIMARY KEY (alarm_id, sink, event)
    );
    -- Dead-letter listings (state = 'dead', oldest first).
    CREATE INDEX alarm_delivery_state ON alarm_delivery (state, seq);
    -- Startup reloads the open outbox: a partial index holds only those rows,
    -- already in the order the outbox wants them.
    CREATE INDEX alarm_delivery_open ON alarm_delivery (seq, sink, event)
        WHERE state <> 'delivered';
    CREATE TABLE alarm_transition (
        seq      INTEGER PRIMARY KEY,
        alarm_id TEXT NOT NULL,
        at       REAL NOT NULL,
        action   TEXT NOT NULL,
        actor    TEXT NOT NULL DEFAULT 'system',
        detail   TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX alarm_transition_alarm ON alarm_transition (alarm_id, seq);
    """,
    # v4: operator-confirmed channel areas (the only areas police sharing trusts). Apart from
    # the channel table: a confirmation may come before the device registers (provisioning)
    # and outlives a catalog that drops and re-adds the channel; no foreign key for that reason.
    """
    CREATE TABLE channel_confirmation (
        channel_id   TEXT PRIMARY KEY,
        area         TEXT NOT NULL,
        confirmed_by TEXT NOT NULL DEFAULT '',
        confirmed_at REAL NOT NULL,
        name         TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX channel_confirmation_area ON channel_confirmation (area);
    """,
    # v5: alarm trust, collapsed repeats and emergency lanes (issue 10: C3, C4, M1).
    """
    -- Where the alarm came from, whether it is verified (held from every sink until it is),
    -- and the repeats a rate limit collapsed into it. Existing alarms count as verified.
    ALTER TABLE alarm ADD COLUMN peer TEXT NOT NULL DEFAULT '';
    ALTER TABLE alarm ADD COLUMN verified INTEGER NOT NULL DEFAULT 1 CHECK (verified IN (0, 1));
    ALTER TABLE alarm ADD COLUMN unverified_reason TEXT NOT NULL DEFAULT '';
    ALTER TABLE alarm ADD COLUMN verified_by TEXT;
    ALTER TABLE alarm ADD COLUMN verified_at REAL;
    ALTER TABLE alarm ADD COLUMN repeats INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE alarm ADD COLUMN last_repeat_at REAL;
    -- Deduplication is by session (sender, address, SN) and lives in memory; the old
    -- (source, method, type, AlarmTime) key could be pre-empted, and nothing reads this index.
    DROP INDEX IF EXISTS alarm_dedupe;
    ALTER TABLE alarm_delivery ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0 CHECK (urgent IN (0, 1));
    """,
    # v6: several gateway nodes on one database (issue 12). Each alarm remembers the node that
    # received it: that node alone reloads and delivers it; listings show every node's. Existing
    # alarms were the one node's, named "gateway" by default. Alarm seqs are handed out in blocks
    # from one counter row (never below a stored seq), so they stay unique across nodes.
    """
    ALTER TABLE alarm ADD COLUMN node TEXT NOT NULL DEFAULT 'gateway';
    CREATE INDEX alarm_node ON alarm (node, state);
    CREATE TABLE alarm_seq_block (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        next_seq INTEGER NOT NULL
    );
    INSERT INTO alarm_seq_block (id, next_seq) SELECT 1, COALESCE(MAX(seq), 0) + 1 FROM alarm;
    """,
    # v7: every kindergarten proven (issue 13). Drill alarms are kept with the real ones but
    # marked, so they reach the sinks as drills and never count in real-alarm statistics.
    # An acceptance run (验收) of a kindergarten: its checks and report, the snapshots it took.
    # RTSP/ONVIF cameras the gateway pulls and shows as channels of a virtual GB device.
    # Coverage per district per day, kept once a day for the 90-day history.
    """
    ALTER TABLE alarm ADD COLUMN drill INTEGER NOT NULL DEFAULT 0 CHECK (drill IN (0, 1));
    CREATE TABLE acceptance (
        id              TEXT PRIMARY KEY,
        kindergarten_id TEXT NOT NULL,
        district_code   TEXT NOT NULL,
        state           TEXT NOT NULL DEFAULT 'running',
        started_by      TEXT NOT NULL,
        started_at      REAL NOT NULL,
        finished_at     REAL,
        drill_alarm_id  TEXT,
        checks          TEXT NOT NULL DEFAULT '[]',
        devices         TEXT NOT NULL DEFAULT '[]',
        report          TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX acceptance_kindergarten ON acceptance (kindergarten_id, started_at);
    CREATE INDEX acceptance_district ON acceptance (district_code, started_at);
    CREATE TABLE acceptance_snapshot (
        acceptance_id TEXT NOT NULL REFERENCES acceptance (id) ON DELETE CASCADE,
        channel_id    TEXT NOT NULL,
        taken_at      REAL NOT NULL,
        jpeg          BLOB NOT NULL,
        PRIMARY KEY (acceptance_id, channel_id)
    );
    CREATE TABLE rtsp_camera (
        channel_id      TEXT PRIMARY KEY,
        device_id       TEXT NOT NULL,
        kindergarten_id TEXT NOT NULL,
        district_code   TEXT NOT NULL,
        name            TEXT NOT NULL,
        area            TEXT NOT NULL DEFAULT 'other',
        url             TEXT NOT NULL,
        username        TEXT NOT NULL DEFAULT '',
        password        TEXT NOT NULL DEFAULT '',
        enabled         INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        created_by      TEXT NOT NULL DEFAULT '',
        created_at      REAL NOT NULL
    );
    CREATE INDEX rtsp_camera_kindergarten ON rtsp_camera (kindergarten_id);
    CREATE TABLE coverage_day (
        day           TEXT NOT NULL,
        district_code TEXT NOT NULL,
        complete      INTEGER NOT NULL DEFAULT 0,
        partial       INTEGER NOT NULL DEFAULT 0,
        missing       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (day, district_code)
    );
    """,
]


def split_statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (sqlite3.complete_statement knows triggers)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    leftover = (ln.strip() for ln in pending.splitlines())
    if any(ln and not ln.startswith("--") for ln in leftover):
        raise StoreError("migration script ends with an incomplete statement")
