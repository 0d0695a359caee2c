-- Where an imported container checkpoint archive was taken (issue 17): engine, container,
-- image, pod and namespace, as a JSON object; NULL for checkpoints ckptd took or that came in
-- ckptd's own format without one.
ALTER TABLE checkpoints ADD COLUMN origin TEXT;
