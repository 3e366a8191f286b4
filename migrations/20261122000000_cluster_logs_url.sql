-- Where a cluster's agent serves its instances' logs (from its heartbeat);
-- empty = it does not.
ALTER TABLE clusters ADD COLUMN logs_url VARCHAR(255) NOT NULL DEFAULT '' AFTER agent_version;
