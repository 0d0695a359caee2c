-- The hooks given at checkpoint time (issue 30): a Hooks object (JSON), whose post_restore and
-- post_restore_signal each restore runs; NULL for none (imports and pulls never carry any).
ALTER TABLE checkpoints ADD COLUMN hooks TEXT;
