-- Container checkpoints record their container (bundle, config digest, terminal, stdio) and every
-- checkpoint the CRIU options file it used.
ALTER TABLE checkpoints ADD COLUMN container TEXT;     -- ContainerRecord (JSON)
ALTER TABLE checkpoints ADD COLUMN criu_config TEXT;
