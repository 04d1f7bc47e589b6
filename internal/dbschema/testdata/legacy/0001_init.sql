-- dialsync schema, version 1.
--
-- Runs with search_path set to the configured schema (default "dialsync"),
-- so every name below is created inside it. Never edit a released
-- migration: add a new numbered file instead.

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
