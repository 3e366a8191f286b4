-- Agent credentials (issue 20): each regional agent (krane, frontline)
-- authenticates with its own bearer token, bound to the region (and, for
-- krane, the cell) it serves. Only the token's SHA-256 digest is stored;
-- the token is shown once, when it is issued.
CREATE TABLE agent_credentials (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  kind ENUM('krane', 'frontline') NOT NULL,
  platform VARCHAR(64) NOT NULL,
  region VARCHAR(64) NOT NULL,
  -- krane's cell id; empty for frontline (one credential per region's edges).
  cell_id VARCHAR(64) NOT NULL DEFAULT '',
  -- The operator's label, e.g. "krane use1-a (prod cluster)".
  name VARCHAR(128) NOT NULL,
  token_digest BINARY(32) NOT NULL,
  -- The token's last four characters, to tell credentials apart in lists.
  token_hint CHAR(4) NOT NULL,
  created_at BIGINT NOT NULL,
  -- Refreshed at most once a minute, by heartbeats and stream starts.
  last_used_at BIGINT NULL,
  revoked_at BIGINT NULL,
  UNIQUE KEY agent_credentials_id (id),
  UNIQUE KEY agent_credentials_digest (token_digest),
  KEY agent_credentials_region (platform, region)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
