-- dialsync schema, version 5.
--
-- Each user's current_user_address_id as of the stored checkpoint, written
-- in the same transaction as the checkpoint (like claim_owners). An address
-- change touches the users pointing at it AT THAT PLACE in the binlog; the
-- lookup server may already show a later pointer change, which would send
-- the change's notice to the wrong users after a restart.
CREATE TABLE user_pointers (
    pipeline   text   NOT NULL,
    user_id    bigint NOT NULL,
    address_id bigint NOT NULL,
    PRIMARY KEY (pipeline, user_id)
);
