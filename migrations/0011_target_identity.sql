-- A schedule's process target is an identity, not a bare pid (issue 25): the start time (clock
-- ticks after boot, /proc/PID/stat) of the process the schedule was made for, so that a run
-- refuses an unrelated process that was given the same pid after the target died. A restore in
-- place by ckptd moves it to the restored process. NULL: a container target, or a schedule made
-- before this column existed (its first run records it).
ALTER TABLE schedules ADD COLUMN target_start INTEGER;
