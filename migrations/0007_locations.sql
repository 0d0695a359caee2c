-- Where a checkpoint's images are (issue 16): on this host's disk (local_images) and in remotes
-- (remote_copies: a JSON list of RemoteCopy objects). A checkpoint pushed with keep_local false
-- stays ready with local_images 0; a restore pulls it first.
ALTER TABLE checkpoints ADD COLUMN local_images INTEGER NOT NULL DEFAULT 1;
ALTER TABLE checkpoints ADD COLUMN remote_copies TEXT NOT NULL DEFAULT '[]';
