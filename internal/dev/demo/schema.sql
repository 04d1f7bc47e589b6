-- The source schema dialsync is built for: the five tables of a Laravel
-- claims application (docs/design.md, "Source tables") plus audit_log, a table dialsync does
-- not track (the workload writes it to prove untracked rows are ignored yet
-- still advance the checkpoint).
--
-- Laravel conventions: BIGINT UNSIGNED AUTO_INCREMENT ids, nullable
-- TIMESTAMP columns (`$table->timestamps()`, `softDeletes()`), no foreign
-- keys (many Laravel apps have none, and hard deletes must work in any
-- order). Each index is one a real app would have, or one the queue rule
-- and the lookups need; the composite ones let the rule be answered from
-- secondary indexes alone.
--
-- Statements are separated by a semicolon at the end of a line (CreateSchema
-- splits on that); keep semicolons out of comments and strings.

CREATE TABLE IF NOT EXISTS users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  first_name VARCHAR(255) NOT NULL,
  last_name VARCHAR(255) NOT NULL,
  email VARCHAR(255) NOT NULL,
  phone_number VARCHAR(32) NULL DEFAULT NULL,
  status VARCHAR(32) NOT NULL DEFAULT 'active',
  is_enabled TINYINT(1) NOT NULL DEFAULT 1,
  introducer VARCHAR(255) NULL DEFAULT NULL,
  solicitor VARCHAR(255) NULL DEFAULT NULL,
  current_user_address_id BIGINT UNSIGNED NULL DEFAULT NULL,
  last_login TIMESTAMP NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL,
  deleted_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id),
  UNIQUE KEY users_email_unique (email),
  KEY users_current_user_address_id_index (current_user_address_id),
  KEY users_status_index (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS user_addresses (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT UNSIGNED NOT NULL,
  full_address VARCHAR(512) NOT NULL,
  post_code VARCHAR(16) NOT NULL,
  county VARCHAR(128) NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id),
  KEY user_addresses_user_id_index (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS claims (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  user_id BIGINT UNSIGNED NOT NULL,
  type VARCHAR(64) NOT NULL,
  status VARCHAR(32) NOT NULL,
  lender VARCHAR(255) NULL DEFAULT NULL,
  solicitor VARCHAR(255) NULL DEFAULT NULL,
  client_last_updated_at TIMESTAMP NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL,
  deleted_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id),
  -- user_id first: the app's "claims of a user" and the queue rule's join.
  -- status and deleted_at ride along so the rule filters without row lookups.
  KEY claims_user_id_status_deleted_at_index (user_id, status, deleted_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS claim_requirements (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  claim_id BIGINT UNSIGNED NOT NULL,
  type VARCHAR(64) NOT NULL,
  status VARCHAR(32) NOT NULL,
  claim_requirement_reason VARCHAR(512) NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id),
  -- (claim_id, status) answers "PENDING requirements of this claim"
  -- created_at makes it covering for MIN(created_at).
  KEY claim_requirements_claim_id_status_index (claim_id, status, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS claim_vehicle_packages (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  claim_id BIGINT UNSIGNED NOT NULL,
  vehicle_registration VARCHAR(16) NULL DEFAULT NULL,
  vehicle_make VARCHAR(64) NULL DEFAULT NULL,
  vehicle_model VARCHAR(64) NULL DEFAULT NULL,
  dealership_name VARCHAR(255) NULL DEFAULT NULL,
  monthly_payment DECIMAL(10,2) NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  updated_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id),
  KEY claim_vehicle_packages_claim_id_index (claim_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS audit_log (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  actor VARCHAR(64) NOT NULL,
  action VARCHAR(64) NOT NULL,
  subject_id BIGINT UNSIGNED NULL DEFAULT NULL,
  created_at TIMESTAMP NULL DEFAULT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
