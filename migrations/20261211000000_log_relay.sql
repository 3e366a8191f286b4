-- Instance logs over the agents' own outbound connections (issue 20): an
-- agent no longer serves logs on a port of its own, so the advertised
-- `clusters.logs_url` goes. A reader of StreamDeploymentLogs (ctrl-api)
-- files a request per region in `log_requests`; the cluster-sync replica
-- holding that region's agent stream hands it to the agent, which pushes the
-- lines back in batches (`log_batches`); the reader consumes and deletes
-- them. Rows live only while someone reads: the reader deletes its request
-- when it leaves, and requests whose reader stopped refreshing are swept.
ALTER TABLE clusters DROP COLUMN logs_url;

CREATE TABLE log_requests (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  cluster_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(64) NOT NULL,
  follow BOOLEAN NOT NULL,
  tail_lines INT UNSIGNED NOT NULL,
  -- pending: filed, not yet handed to the agent; claimed: handed to it;
  -- ended: the agent sent its last batch (error says why, if it failed).
  state ENUM('pending', 'claimed', 'ended') NOT NULL DEFAULT 'pending',
  error VARCHAR(1024) NULL,
  created_at BIGINT NOT NULL,
  claimed_at BIGINT NULL,
  -- Refreshed by the reader while it reads: a stale one means it is gone.
  reader_seen_at BIGINT NOT NULL,
  -- Refreshed by every push of the agent (empty ones while a follow is quiet).
  agent_seen_at BIGINT NULL,
  UNIQUE KEY log_requests_id (id),
  KEY log_requests_state (state, cluster_id),
  KEY log_requests_reader (reader_seen_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE log_batches (
  request_id VARCHAR(48) NOT NULL,
  -- The agent's sequence number, from 1, in push order (a retried push
  -- repeats its number and is ignored).
  seq BIGINT UNSIGNED NOT NULL,
  -- ctrl.v1.LogLines, protobuf-encoded.
  body MEDIUMBLOB NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (request_id, seq),
  KEY log_batches_created (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
