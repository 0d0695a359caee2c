-- A group checkpoint's members (issue 30): each one's target, container record and dump
-- statistics, in the order of the group's targets; their images are in <dir>/<index>. NULL: not
-- a group.
ALTER TABLE checkpoints ADD COLUMN members TEXT;
