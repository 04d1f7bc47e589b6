-- dialsync schema, version 6.
--
-- The leader's heartbeat moves out of the leases row. Queue and checkpoint
-- writes hold that row FOR SHARE for their whole transaction (the epoch
-- fence), and an UPDATE of the same row waits for them: a long write (a
-- reconcile chunk, the bootstrap's map save) then starved the heartbeat and
-- the leader stepped down. Heartbeats go here; leases.renewed_at is still
-- set when a lease is taken, so a new leader never looks stale.
CREATE TABLE lease_heartbeats (
    pipeline   text        PRIMARY KEY,
    epoch      bigint      NOT NULL,
    renewed_at timestamptz NOT NULL
);
