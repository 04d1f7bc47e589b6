-- dialsync schema, version 4.
--
-- A replay after a crash meets the same poison row again: the unique key
-- makes recording it idempotent (AddDeadLetter inserts ON CONFLICT DO
-- NOTHING), so each bad row is listed once.
ALTER TABLE dead_letters ADD COLUMN seq integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX dead_letters_once ON dead_letters (pipeline, gtid, file, pos, table_name, seq);
