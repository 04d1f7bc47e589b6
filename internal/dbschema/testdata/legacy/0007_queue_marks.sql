-- dialsync schema, version 7.
--
-- The last source transaction (or piece of one) whose call_queue writes are
-- durable, written in the same transaction as those writes. A replay after a
-- crash skips the queue rows of transactions at or before it: they are
-- already applied, and recomputing them from the source as it is now would
-- announce newer values a second time under an old transaction.
CREATE TABLE queue_marks (
    pipeline    text        NOT NULL PRIMARY KEY,
    file        text        NOT NULL,
    pos         bigint      NOT NULL,
    gtid_set    text        NOT NULL,
    partial_txn text        NOT NULL,
    piece       integer     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
