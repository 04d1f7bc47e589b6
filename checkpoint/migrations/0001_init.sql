-- dialsync schema, version 1: the checkpoint package's part.
--
-- Version 1 created the tables of every owner in one transaction; the
-- migration runner (dialsync/internal/migrate) still applies this file and
-- the queue store's 0001_init.sql (internal/pgstore/migrations) together,
-- in that order, as the one version 1.
--
-- Runs with search_path set to the configured schema (default "dialsync"),
-- so every name below is created inside it. Never edit a released
-- migration: add a new numbered file instead (the numbers are one sequence
-- across owners: take the next free one).

-- The binlog checkpoint of each pipeline (one source per pipeline name, so
-- several sources can share one database). Written after every durable batch.
CREATE TABLE checkpoints (
    pipeline    text        PRIMARY KEY,
    gtid_set    text        NOT NULL DEFAULT '',
    file        text        NOT NULL DEFAULT '',
    pos         bigint      NOT NULL DEFAULT 0,
    server_uuid text        NOT NULL DEFAULT '',
    -- The leadership epoch of the writer; a save with an older epoch is refused.
    epoch       bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Every operator (or automatic recovery) change of a checkpoint: when, who,
-- why, old and new. NULL old_* means there was no checkpoint; NULL new_*
-- means the checkpoint was removed (reset).
CREATE TABLE checkpoint_history (
    id           bigserial   PRIMARY KEY,
    pipeline     text        NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    old_gtid_set text,
    old_file     text,
    old_pos      bigint,
    new_gtid_set text,
    new_file     text,
    new_pos      bigint,
    epoch        bigint      NOT NULL DEFAULT 0
);
CREATE INDEX checkpoint_history_pipeline_id ON checkpoint_history (pipeline, id);
CREATE INDEX checkpoint_history_at ON checkpoint_history (at);

-- Leadership terms. The holder of the advisory lock increments epoch when it
-- takes over; checkpoint saves compare against it (fencing).
CREATE TABLE leases (
    pipeline    text        PRIMARY KEY,
    epoch       bigint      NOT NULL,
    holder      text        NOT NULL,
    acquired_at timestamptz NOT NULL
);
