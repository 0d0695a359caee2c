-- Schedules: periodic checkpoints of one target, with retention. Their checkpoints carry the
-- label schedule=<name>. Checkpoints may carry an expiry.
CREATE TABLE schedules (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL UNIQUE,
    target        TEXT NOT NULL,                      -- Target (JSON)
    cron          TEXT NOT NULL,                      -- as given
    options       TEXT NOT NULL,                      -- ScheduleOptions (JSON)
    retention     TEXT NOT NULL,                      -- Retention (JSON)
    enabled       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    -- The next run is the first cron slot after this time: creation, the last slot run, or the
    -- last change of cron/enabled. A slot missed while the daemon was down is therefore run
    -- once at start, and the anchor then jumps to the newest slot.
    anchor_at     TEXT NOT NULL,
    last_run      TEXT,                               -- ScheduleRun (JSON)
    owner_uid     INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE checkpoints ADD COLUMN expires_at TEXT;
CREATE INDEX checkpoints_expires ON checkpoints (expires_at) WHERE expires_at IS NOT NULL;
