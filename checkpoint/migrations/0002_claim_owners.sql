-- dialsync schema, version 2.
--
-- The claim -> user mapping as of the stored checkpoint, written in the same
-- transaction as the checkpoint. A requirement or vehicle package change
-- names only its claim; the lookup server may already show the claim moved
-- or deleted by a LATER transaction, so resolving through it would send the
-- change's notice to the wrong user. With this map, a restart resolves the
-- replayed changes exactly as they were at their position in the binlog.
CREATE TABLE claim_owners (
    pipeline text   NOT NULL,
    claim_id bigint NOT NULL,
    user_id  bigint NOT NULL,
    PRIMARY KEY (pipeline, claim_id)
);
