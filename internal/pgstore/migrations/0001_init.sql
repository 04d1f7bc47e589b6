-- dialsync schema, version 1: the queue store's part.
--
-- Version 1 created the tables of every owner in one transaction; the
-- migration runner (dialsync/internal/migrate) still applies the checkpoint
-- package's 0001_init.sql (checkpoint/migrations) and then this file
-- together, as the one version 1.
--
-- Runs with search_path set to the configured schema (default "dialsync"),
-- so every name below is created inside it. Never edit a released
-- migration: add a new numbered file instead (the numbers are one sequence
-- across owners: take the next free one).

-- The call queue the dialler reads: one row per queued user.
CREATE TABLE call_queue (
    user_id              bigint      PRIMARY KEY,
    open_claims          integer     NOT NULL,
    pending_requirements integer     NOT NULL,
    oldest_pending_at    timestamptz,
    entered_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
-- The dialler phones the longest-waiting users first.
CREATE INDEX call_queue_oldest_pending_at ON call_queue (oldest_pending_at NULLS LAST, user_id);

-- Notices stored in the same transaction as the queue change they describe,
-- deleted once JetStream acknowledged them (transactional outbox).
CREATE TABLE outbox (
    pipeline text   NOT NULL,
    seq      bigserial,
    msg_id   text   NOT NULL,
    subject  text   NOT NULL,
    data     bytea  NOT NULL,
    PRIMARY KEY (pipeline, seq)
);

-- Rows that could not be processed under a table's dead-letter policy.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    pipeline    text        NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    file        text        NOT NULL DEFAULT '',
    pos         bigint      NOT NULL DEFAULT 0,
    gtid        text        NOT NULL DEFAULT '',
    table_name  text        NOT NULL,
    primary_key text        NOT NULL DEFAULT '',
    error       text        NOT NULL,
    row_image   jsonb,
    retried_at  timestamptz
);
CREATE INDEX dead_letters_pipeline_id ON dead_letters (pipeline, id);
CREATE INDEX dead_letters_at ON dead_letters (at);
