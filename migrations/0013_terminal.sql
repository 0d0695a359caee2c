-- A process tree's controlling terminal at checkpoint time (issue 30): the key CRIU names it by,
-- tty[RDEV:DEV]; its restores give it a new terminal ckptd holds. NULL: it had none.
ALTER TABLE checkpoints ADD COLUMN terminal TEXT;
