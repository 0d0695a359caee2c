-- A schedule counts its consecutive failed runs; after schedule_max_failures of them it is
-- disabled, and says why, until someone enables it again (which starts the count afresh).
ALTER TABLE schedules ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE schedules ADD COLUMN disabled_reason TEXT;
