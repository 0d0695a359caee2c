-- When a schedule last succeeded and last failed (issue 18: dashboards and alerts need both,
-- and last_run holds only the newest run).
ALTER TABLE schedules ADD COLUMN last_success_at TEXT;
ALTER TABLE schedules ADD COLUMN last_failure_at TEXT;
