-- Lookups that scanned every row (measured with 100,000 checkpoints, BENCHMARKS.md):
-- A reference by name (`id = ? OR name = ?`): the unique index on name is partial (migration
-- 0005: failed checkpoints give their name up), so the OR could not use it.
CREATE INDEX checkpoints_name ON checkpoints (name);
-- A schedule's checkpoints (label "schedule", schedules::LABEL), read by the retention pass after
-- each scheduled run and by the timer's pass over every schedule.
CREATE INDEX checkpoints_schedule ON checkpoints (json_extract(labels, '$.schedule'), seq);
