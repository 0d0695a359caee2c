-- A name belongs to a checkpoint that is pending, running, ready or missing: a failed (or
-- cancelled) one gives its name up, so that the retry its error suggests can use the same name.
-- A failed checkpoint stays reachable by its id; by name, a reference finds the one that did not
-- fail, else the newest failed one.
DROP INDEX checkpoints_name_key;
CREATE UNIQUE INDEX checkpoints_name_key ON checkpoints (name) WHERE status <> 'failed';
