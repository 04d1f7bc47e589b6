-- PostgreSQL role for dialsync. Run as an administrator of the database
-- dialsync writes to; replace dialsync_app (the database), "dialsync" (the
-- schema, postgres.schema) and the password, then verify with
-- `dialsync check` (its postgres line says what this role may do).
--
-- What dialsync does there: `dialsync run` creates its schema and tables on
-- its first start and migrates them on upgrades (CREATE); after that it only
-- reads and writes rows (SELECT, INSERT, UPDATE, DELETE) and takes advisory
-- locks (no privilege). The read-only commands (checkpoint show/history,
-- deadletters list, reconcile --dry-run, explain) never create anything.
-- Nothing here reaches other schemas.

CREATE ROLE dialsync LOGIN PASSWORD 'change-me';

-- Pick ONE of A and B.

-- A. dialsync creates (and owns) its schema on the first `dialsync run`:
GRANT CREATE ON DATABASE dialsync_app TO dialsync;

-- B. The least: no CREATE on the database. An administrator creates the
--    schema, owned by the role; `dialsync run` creates and migrates the
--    tables inside it.
-- CREATE SCHEMA dialsync AUTHORIZATION dialsync;

-- ---------------------------------------------------------------------------
-- An operator's read-only role (the read-only commands above), once the
-- schema exists:
-- CREATE ROLE dialsync_ro LOGIN PASSWORD 'change-me';
-- GRANT USAGE ON SCHEMA dialsync TO dialsync_ro;
-- GRANT SELECT ON ALL TABLES IN SCHEMA dialsync TO dialsync_ro;
--
-- A role that runs dialsync on a schema another role owns and migrates
-- (the owner must then run each upgrade's first start):
-- GRANT USAGE ON SCHEMA dialsync TO dialsync_rw;
-- GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA dialsync TO dialsync_rw;
-- GRANT USAGE ON ALL SEQUENCES IN SCHEMA dialsync TO dialsync_rw;
