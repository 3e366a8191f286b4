-- The edge's change feed (frontline). Every write that changes what the
-- edge serves (a hostname's route, a deployment's instances or desired
-- state, a certificate) appends the key it touched to `edge_changes` in the
-- same transaction, with a version from `edge_sequence`. The sequence row
-- stays locked until commit, so versions become visible in order: a reader
-- that has seen version v never later finds a change <= v. The feed reads
-- the current state of each key it finds, so a row says only *what*
-- changed, never *how* (see ctrl-db's `edge` module).
CREATE TABLE edge_sequence (
  id TINYINT UNSIGNED NOT NULL PRIMARY KEY,
  version BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO edge_sequence (id, version) VALUES (1, 0);

CREATE TABLE edge_changes (
  version BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  kind ENUM('host', 'deployment', 'certificate') NOT NULL,
  -- The hostname, deployment id or certificate hostname.
  ref VARCHAR(253) NOT NULL,
  created_at BIGINT NOT NULL,
  KEY edge_changes_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Requests the edge served, per deployment, region and minute (frontline
-- reports them in batches); the idle-preview scale-down reads them.
CREATE TABLE deployment_traffic (
  deployment_id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  -- Start of the minute, unix ms.
  minute BIGINT NOT NULL,
  requests BIGINT UNSIGNED NOT NULL,
  PRIMARY KEY (deployment_id, region_id, minute),
  KEY deployment_traffic_minute (minute)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The last request the edge served for a deployment, unix ms.
ALTER TABLE deployments ADD COLUMN last_request_at BIGINT NULL AFTER invocation_id;
