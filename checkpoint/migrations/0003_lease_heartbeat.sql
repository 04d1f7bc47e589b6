-- dialsync schema, version 3.
--
-- The leader's heartbeat. A leader renews renewed_at on its lock connection
-- every ha.lease_check; a standby that finds it older than the lease TTL
-- terminates the session holding the advisory lock and takes over. The
-- advisory lock alone is not enough: a paused (SIGSTOP, frozen VM) leader
-- keeps its TCP connection, and so its lock, indefinitely. Existing rows get
-- the migration's time, so a running leader is not deposed by the upgrade.
ALTER TABLE leases ADD COLUMN renewed_at timestamptz NOT NULL DEFAULT now();
