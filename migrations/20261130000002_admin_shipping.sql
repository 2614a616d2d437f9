-- An admin request ships the admin actions it recorded, found by its request id, while older
-- unshipped actions wait for the rollup: index the unshipped ones by request id so that lookup
-- stays small however long the backlog grows.
CREATE INDEX llmlite_admin_action_unshipped_request_idx
    ON llmlite_admin_action (request_id) WHERE shipped_at IS NULL;
