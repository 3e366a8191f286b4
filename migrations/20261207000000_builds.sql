-- Deployments built from source (issue 17).

-- What to build: an uploaded context (its S3 key) or a git repository (the
-- GitHub App installation that reads it), the directory and Dockerfile inside
-- it, and the build arguments. The image is filled in by the build.
ALTER TABLE deployments
  MODIFY source_kind ENUM('image', 'git', 'context') NOT NULL,
  ADD COLUMN git_installation_id BIGINT NULL AFTER git_repository,
  ADD COLUMN build_context_path VARCHAR(512) NULL AFTER build_id,
  ADD COLUMN build_dir VARCHAR(500) NULL AFTER build_context_path,
  ADD COLUMN dockerfile_path VARCHAR(500) NULL AFTER build_dir,
  ADD COLUMN build_args JSON NULL AFTER dockerfile_path;

-- One build per deployment (a retry of the pipeline resumes it); the
-- workspace's build slots are counted over running rows, and queued rows
-- are served production first, then oldest first.
ALTER TABLE builds
  ADD COLUMN backend VARCHAR(32) NOT NULL DEFAULT 'docker' AFTER status,
  ADD COLUMN is_production BOOLEAN NOT NULL DEFAULT FALSE AFTER backend,
  ADD COLUMN digest VARCHAR(80) NULL AFTER image,
  ADD COLUMN current_step VARCHAR(512) NULL AFTER digest,
  ADD COLUMN context_bytes BIGINT NULL AFTER current_step,
  ADD COLUMN log_lines INT NOT NULL DEFAULT 0 AFTER context_bytes,
  ADD UNIQUE KEY builds_one_per_deployment (deployment_id),
  ADD KEY builds_workspace_status (workspace_id, status),
  DROP KEY builds_deployment;

-- A build's output, line by line (at most a configured number of lines per
-- build; the rest is counted, not kept).
CREATE TABLE build_logs (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  build_id VARCHAR(48) NOT NULL,
  line INT NOT NULL,
  at BIGINT NOT NULL,
  text VARCHAR(4096) NOT NULL,
  UNIQUE KEY build_logs_line (build_id, line)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
