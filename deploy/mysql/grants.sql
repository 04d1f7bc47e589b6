-- Least-privilege MySQL/MariaDB account for dialsync (docs/design.md, invariant 6:
-- zero writes to the source).
--
-- Run as an administrator ON THE SERVER WHOSE BINLOG DIALSYNC READS (on RDS:
-- the master user; with a read replica, create the user on the primary:
-- it replicates to the replica). Replace `laravel` with the Laravel schema
-- and the password, then verify with `dialsync check`.
--
-- What each grant is for:
--   REPLICATION SLAVE   COM_BINLOG_DUMP(_GTID): stream the binlog.
--   REPLICATION CLIENT  SHOW MASTER STATUS / SHOW BINARY LOG STATUS and
--                       SHOW BINARY LOGS: the head position, lag in bytes,
--                       retention headroom, purged-checkpoint detection;
--                       on MariaDB also SHOW BINLOG EVENTS (is the checkpoint
--                       an event boundary, which GTIDs were purged).
--                       (MariaDB 10.5+: BINLOG MONITOR; see below.)
--   Not needed: SLAVE MONITOR, REPLICATION MASTER ADMIN (`dialsync check`
--                       reads what it needs without them), SUPER, any write.
--   SELECT on the five tracked tables: batched point lookups, the queue
--                       rule, reconcile, and the column metadata canal reads
--                       (SHOW FULL COLUMNS / SHOW INDEX need a privilege on
--                       the table). Nothing else: rows of other tables are
--                       skipped from the binlog without any lookup.
-- Nothing here allows a write, DDL, or reading other tables.

-- ---------------------------------------------------------------------------
-- MySQL 8.0 / 8.4 (RDS MySQL included). The default, run as is.
-- ---------------------------------------------------------------------------
CREATE USER IF NOT EXISTS 'dialsync'@'%'
  IDENTIFIED BY 'change-me'
  REQUIRE SSL
  -- The binlog stream plus a small lookup pool per instance, two instances.
  WITH MAX_USER_CONNECTIONS 20;

GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'dialsync'@'%';

GRANT SELECT ON `laravel`.`users`                  TO 'dialsync'@'%';
GRANT SELECT ON `laravel`.`user_addresses`         TO 'dialsync'@'%';
GRANT SELECT ON `laravel`.`claims`                 TO 'dialsync'@'%';
GRANT SELECT ON `laravel`.`claim_requirements`     TO 'dialsync'@'%';
GRANT SELECT ON `laravel`.`claim_vehicle_packages` TO 'dialsync'@'%';

-- MySQL 8.0.22+ also accepts the new names; the same privileges:
--   GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* ...   (unchanged in 8.4)
-- MySQL 5.7 (end of life): identical, without IF NOT EXISTS / WITH clauses
-- in CREATE USER; set the limit with GRANT USAGE ... WITH MAX_USER_CONNECTIONS.

-- ---------------------------------------------------------------------------
-- MariaDB 10.5+ (RDS MariaDB included). Comment out the MySQL block above and
-- use this one: 10.5 split REPLICATION CLIENT, and SHOW BINLOG STATUS /
-- SHOW BINARY LOGS now need BINLOG MONITOR (REPLICATION CLIENT is kept as an
-- alias of it, so the MySQL block also works, but say what you mean).
-- https://mariadb.com/kb/en/grant/#replication-privileges
-- ---------------------------------------------------------------------------
-- CREATE USER IF NOT EXISTS 'dialsync'@'%'
--   IDENTIFIED BY 'change-me'
--   REQUIRE SSL
--   WITH MAX_USER_CONNECTIONS 20;
-- GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'dialsync'@'%';
-- GRANT SELECT ON `laravel`.`users`                  TO 'dialsync'@'%';
-- GRANT SELECT ON `laravel`.`user_addresses`         TO 'dialsync'@'%';
-- GRANT SELECT ON `laravel`.`claims`                 TO 'dialsync'@'%';
-- GRANT SELECT ON `laravel`.`claim_requirements`     TO 'dialsync'@'%';
-- GRANT SELECT ON `laravel`.`claim_vehicle_packages` TO 'dialsync'@'%';
--
-- MariaDB before 10.5: the MySQL block as is (REPLICATION CLIENT).

-- ---------------------------------------------------------------------------
-- Check what was granted (expect exactly the lines above):
--   SHOW GRANTS FOR 'dialsync'@'%';
-- Narrow the host part ('dialsync'@'10.0.%') to the network dialsync runs in.
-- ---------------------------------------------------------------------------
