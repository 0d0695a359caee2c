-- Who created each checkpoint and job (the caller's uid by SO_PEERCRED); 0 is root.
ALTER TABLE checkpoints ADD COLUMN owner_uid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN owner_uid INTEGER NOT NULL DEFAULT 0;
CREATE INDEX checkpoints_owner ON checkpoints (owner_uid, seq);
CREATE INDEX jobs_owner ON jobs (owner_uid, seq);
