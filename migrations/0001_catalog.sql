-- ckptd catalog, version 1. Never edit a migration that has shipped; add a new one.
-- Times are RFC 3339 UTC text exactly as the API shows them; JSON columns hold the API's objects.

CREATE TABLE checkpoints (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order: list order and cursor
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    target_kind   TEXT NOT NULL,                      -- process | container
    target_pid    INTEGER,                            -- process targets
    target_id     TEXT,                               -- container targets
    target        TEXT NOT NULL,                      -- the Target object (JSON)
    status        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    completed_at  TEXT,
    dir           TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL DEFAULT 0,
    options       TEXT NOT NULL,                      -- CheckpointOptions (JSON)
    labels        TEXT NOT NULL DEFAULT '{}',         -- {"k":"v"} (JSON)
    criu_version  TEXT,
    stats         TEXT,                               -- DumpStats (JSON)
    error         TEXT                                -- ErrorInfo (JSON)
);
CREATE UNIQUE INDEX checkpoints_name_key ON checkpoints (name);
CREATE UNIQUE INDEX checkpoints_dir_key ON checkpoints (dir);
CREATE INDEX checkpoints_pid ON checkpoints (target_pid, seq);
CREATE INDEX checkpoints_container ON checkpoints (target_id, seq);
CREATE INDEX checkpoints_status ON checkpoints (status, seq);

CREATE TABLE jobs (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    kind          TEXT NOT NULL,                      -- checkpoint | restore
    checkpoint_id TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    finished_at   TEXT,
    request       TEXT NOT NULL DEFAULT '{}',         -- what the worker needs to run it (JSON)
    result        TEXT,                               -- JobResult (JSON)
    error         TEXT                                -- ErrorInfo (JSON)
);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_checkpoint ON jobs (checkpoint_id, seq);
