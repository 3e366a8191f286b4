-- What an agent last reported about running a deployment in a region: the
-- problem in its words ("image localhost/x:1 not found"), and how many
-- attempts in a row failed. Reset whenever the desired state is written
-- again. Not desired state: writing these takes no region version.
ALTER TABLE deployment_topology
  ADD COLUMN problem VARCHAR(512) NULL AFTER version,
  ADD COLUMN failed_attempts INT UNSIGNED NOT NULL DEFAULT 0 AFTER problem,
  ADD COLUMN problem_at BIGINT NULL AFTER failed_attempts,
  -- How long a new instance may take to become healthy before failing
  -- health checks count against it (the deploy's readiness timeout).
  ADD COLUMN startup_timeout_seconds INT UNSIGNED NOT NULL DEFAULT 0 AFTER problem_at;

-- The last live swap of an app (its operation id) and what was live before
-- it, written in the swap's transaction: a swap replayed after a crash finds
-- its own id and answers the same "previous" instead of swapping again.
ALTER TABLE apps
  ADD COLUMN live_swap_id VARCHAR(64) NULL AFTER is_rolled_back,
  ADD COLUMN live_swap_previous_id VARCHAR(48) NULL AFTER live_swap_id;

-- Set when a deletion cascade starts (on the target and everything below
-- it): nothing new is created under a row being deleted. The cascade
-- (ctrl-worker's Deletion object) removes the rows when it is done.
ALTER TABLE workspaces ADD COLUMN deleting_at BIGINT NULL AFTER k8s_namespace;
ALTER TABLE projects ADD COLUMN deleting_at BIGINT NULL AFTER delete_protection;
ALTER TABLE apps ADD COLUMN deleting_at BIGINT NULL AFTER delete_protection;
ALTER TABLE environments ADD COLUMN deleting_at BIGINT NULL AFTER delete_protection;
