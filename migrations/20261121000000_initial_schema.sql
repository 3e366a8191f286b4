-- The initial ctrl schema. MySQL 8 and MariaDB 10.11+.
--
-- Conventions: `pk` is the internal auto-increment key (also the paging
-- cursor); `id` is the public prefixed id; timestamps are unix milliseconds;
-- ids and names that must compare case-sensitively use utf8mb4_bin. There are
-- no foreign keys: deletes cascade through durable workflows, as in the
-- original. Secrets are only ever stored encrypted (`encrypted_*` columns).

CREATE TABLE workspaces (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  name VARCHAR(128) NOT NULL,
  slug VARCHAR(32) NOT NULL,
  k8s_namespace VARCHAR(63) NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY workspaces_id (id),
  UNIQUE KEY workspaces_slug (slug),
  UNIQUE KEY workspaces_k8s_namespace (k8s_namespace)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE projects (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  name VARCHAR(128) NOT NULL,
  slug VARCHAR(32) NOT NULL,
  delete_protection BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY projects_id (id),
  UNIQUE KEY projects_workspace_slug (workspace_id, slug)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE apps (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  name VARCHAR(128) NOT NULL,
  slug VARCHAR(32) NOT NULL,
  default_branch VARCHAR(256) NOT NULL DEFAULT 'main',
  -- The live pointer: only Routing's swap writes it.
  live_deployment_id VARCHAR(48) NULL,
  is_rolled_back BOOLEAN NOT NULL DEFAULT FALSE,
  delete_protection BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY apps_id (id),
  UNIQUE KEY apps_project_slug (project_id, slug),
  KEY apps_workspace (workspace_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE environments (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  slug VARCHAR(32) NOT NULL,
  kind ENUM('production', 'preview') NOT NULL DEFAULT 'preview',
  description VARCHAR(512) NOT NULL DEFAULT '',
  delete_protection BOOLEAN NOT NULL DEFAULT FALSE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  -- At most one production environment per app (NULL for previews).
  production_app_id VARCHAR(48) AS (CASE WHEN kind = 'production' THEN app_id END) STORED,
  UNIQUE KEY environments_id (id),
  UNIQUE KEY environments_app_slug (app_id, slug),
  UNIQUE KEY environments_one_production (production_app_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_build_settings (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  dockerfile VARCHAR(500) NULL,
  docker_context VARCHAR(500) NOT NULL DEFAULT '.',
  build_command VARCHAR(1000) NULL,
  watch_paths JSON NOT NULL,
  auto_deploy BOOLEAN NOT NULL DEFAULT TRUE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY app_build_settings_environment (environment_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_runtime_settings (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  port INT NOT NULL DEFAULT 8080,
  cpu_millicores INT NOT NULL DEFAULT 250,
  memory_mib INT NOT NULL DEFAULT 256,
  storage_mib INT NOT NULL DEFAULT 0,
  command JSON NOT NULL,
  healthcheck JSON NULL,
  shutdown_signal ENUM('SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGKILL') NOT NULL DEFAULT 'SIGTERM',
  termination_grace_seconds INT NOT NULL DEFAULT 30,
  upstream_protocol ENUM('http1', 'h2c') NOT NULL DEFAULT 'http1',
  openapi_spec_path VARCHAR(512) NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY app_runtime_settings_environment (environment_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_regional_settings (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  min_replicas INT UNSIGNED NOT NULL DEFAULT 1,
  max_replicas INT UNSIGNED NOT NULL DEFAULT 1,
  cpu_threshold_percent TINYINT UNSIGNED NOT NULL DEFAULT 0,
  memory_threshold_percent TINYINT UNSIGNED NOT NULL DEFAULT 0,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY app_regional_settings_environment_region (environment_id, region_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE app_environment_variables (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  `key` VARCHAR(256) NOT NULL,
  -- Sealed by the vault; never plaintext.
  encrypted_value BLOB NOT NULL,
  kind ENUM('recoverable', 'writeonly') NOT NULL DEFAULT 'recoverable',
  description VARCHAR(512) NOT NULL DEFAULT '',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY app_environment_variables_id (id),
  UNIQUE KEY app_environment_variables_environment_key (environment_id, `key`)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE regions (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  name VARCHAR(64) NOT NULL,
  platform VARCHAR(64) NOT NULL,
  can_schedule BOOLEAN NOT NULL DEFAULT TRUE,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY regions_id (id),
  UNIQUE KEY regions_name_platform (name, platform)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One counter per region. A desired-state change increments it and stamps
-- its row in the same transaction; the row lock serialises writers of a
-- region, so versions become visible in version order (the watch invariant).
CREATE TABLE region_versions (
  region_id VARCHAR(48) NOT NULL PRIMARY KEY,
  version BIGINT UNSIGNED NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE clusters (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  cell_id VARCHAR(64) NOT NULL,
  backend ENUM('docker', 'kubernetes', 'unknown') NOT NULL DEFAULT 'unknown',
  agent_version VARCHAR(64) NOT NULL DEFAULT '',
  last_heartbeat_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY clusters_id (id),
  UNIQUE KEY clusters_region (region_id),
  UNIQUE KEY clusters_cell (cell_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE deployments (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  -- Workload name (DNS-1035), also the lookup key of agent reports.
  k8s_name VARCHAR(63) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  status ENUM('pending', 'awaiting_approval', 'starting', 'building', 'deploying', 'network',
              'finalizing', 'ready', 'failed', 'skipped', 'stopped', 'superseded', 'cancelled')
    NOT NULL DEFAULT 'pending',
  error_message VARCHAR(1024) NULL,
  desired_state ENUM('running', 'stopped') NOT NULL DEFAULT 'running',
  source_kind ENUM('image', 'git') NOT NULL,
  image VARCHAR(512) NULL,
  build_id VARCHAR(48) NULL,
  git_repository VARCHAR(256) NULL,
  git_commit_sha VARCHAR(40) NULL,
  git_branch VARCHAR(256) NULL,
  git_commit_message TEXT NULL,
  git_commit_author_handle VARCHAR(256) NULL,
  git_commit_author_avatar_url VARCHAR(512) NULL,
  git_commit_timestamp BIGINT NULL,
  fork_repository VARCHAR(256) NULL,
  -- Snapshot of the runtime settings when the deployment was created.
  port INT NOT NULL,
  cpu_millicores INT NOT NULL,
  memory_mib INT NOT NULL,
  storage_mib INT NOT NULL,
  command JSON NOT NULL,
  healthcheck JSON NULL,
  shutdown_signal ENUM('SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGKILL') NOT NULL,
  termination_grace_seconds INT NOT NULL,
  upstream_protocol ENUM('http1', 'h2c') NOT NULL,
  -- Snapshot of the environment variables, each sealed (ctrl.v1.EncryptedEnvironment).
  encrypted_environment LONGBLOB NOT NULL,
  trigger_kind ENUM('api', 'cli', 'dashboard', 'github', 'system') NOT NULL DEFAULT 'api',
  trigger_reason VARCHAR(512) NULL,
  actor_id VARCHAR(256) NULL,
  actor_name VARCHAR(256) NULL,
  actor_type ENUM('user', 'token', 'system') NULL,
  idempotency_key VARCHAR(128) NULL,
  -- The Restate invocation of its Deploy workflow (for cancel).
  invocation_id VARCHAR(256) NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY deployments_id (id),
  UNIQUE KEY deployments_k8s_name (k8s_name),
  UNIQUE KEY deployments_idempotency (app_id, idempotency_key),
  KEY deployments_app_env_branch (app_id, environment_id, git_branch, created_at),
  KEY deployments_app_created (app_id, created_at),
  KEY deployments_workspace (workspace_id),
  KEY deployments_status (status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE deployment_steps (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  step ENUM('queued', 'starting', 'building', 'deploying', 'network', 'finalizing') NOT NULL,
  message VARCHAR(512) NOT NULL DEFAULT '',
  error VARCHAR(512) NULL,
  started_at BIGINT NOT NULL,
  -- NULL while running. The first end wins ("Cancelled by user" beats a
  -- later workflow error).
  ended_at BIGINT NULL,
  UNIQUE KEY deployment_steps_deployment_step (deployment_id, step)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per deployment and region: what the region's agent reconciles.
CREATE TABLE deployment_topology (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  min_replicas INT UNSIGNED NOT NULL,
  max_replicas INT UNSIGNED NOT NULL,
  cpu_threshold_percent TINYINT UNSIGNED NOT NULL DEFAULT 0,
  memory_threshold_percent TINYINT UNSIGNED NOT NULL DEFAULT 0,
  desired_status ENUM('running', 'stopped') NOT NULL,
  -- From region_versions, stamped in the same transaction as the change.
  version BIGINT UNSIGNED NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY deployment_topology_deployment_region (deployment_id, region_id),
  UNIQUE KEY deployment_topology_region_version (region_id, version),
  KEY deployment_topology_region_status (region_id, desired_status, pk)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Which traffic may reach a deployment's instances in a region.
CREATE TABLE network_policies (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  k8s_namespace VARCHAR(63) NOT NULL,
  k8s_name VARCHAR(253) NOT NULL,
  policy JSON NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY network_policies_id (id),
  UNIQUE KEY network_policies_deployment_region (deployment_id, region_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Observed instances, written only from agent reports.
CREATE TABLE instances (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  region_id VARCHAR(48) NOT NULL,
  name VARCHAR(253) NOT NULL,
  address VARCHAR(256) NOT NULL,
  cpu_millicores INT NOT NULL,
  memory_mib INT NOT NULL,
  status ENUM('pending', 'running', 'failed') NOT NULL,
  restart_count INT NOT NULL DEFAULT 0,
  last_exit_code INT NULL,
  last_exit_reason VARCHAR(256) NULL,
  last_exit_at BIGINT NULL,
  oom_killed BOOLEAN NOT NULL DEFAULT FALSE,
  waiting_reason VARCHAR(256) NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY instances_id (id),
  UNIQUE KEY instances_region_name (region_id, name),
  KEY instances_deployment (deployment_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- What the edge reads: hostname -> deployment.
CREATE TABLE frontline_routes (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  fully_qualified_domain_name VARCHAR(253) NOT NULL,
  sticky ENUM('none', 'branch', 'environment', 'live', 'deployment') NOT NULL DEFAULT 'none',
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY frontline_routes_id (id),
  UNIQUE KEY frontline_routes_fqdn (fully_qualified_domain_name),
  KEY frontline_routes_deployment (deployment_id),
  KEY frontline_routes_environment_sticky (environment_id, sticky)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE custom_domains (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  environment_id VARCHAR(48) NOT NULL,
  domain VARCHAR(253) NOT NULL,
  challenge_type ENUM('http-01', 'dns-01') NOT NULL DEFAULT 'http-01',
  verification_status ENUM('pending', 'verifying', 'verified', 'failed') NOT NULL DEFAULT 'pending',
  verification_token VARCHAR(64) NOT NULL,
  ownership_verified BOOLEAN NOT NULL DEFAULT FALSE,
  cname_verified BOOLEAN NOT NULL DEFAULT FALSE,
  target_cname VARCHAR(253) NOT NULL,
  last_checked_at BIGINT NULL,
  check_attempts INT NOT NULL DEFAULT 0,
  verification_error VARCHAR(512) NULL,
  invocation_id VARCHAR(256) NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY custom_domains_id (id),
  UNIQUE KEY custom_domains_workspace_domain (workspace_id, domain),
  UNIQUE KEY custom_domains_target_cname (target_cname),
  KEY custom_domains_status (verification_status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE acme_users (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  encrypted_key BLOB NOT NULL,
  registration_uri VARCHAR(512) NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY acme_users_id (id),
  UNIQUE KEY acme_users_workspace (workspace_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE acme_challenges (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  domain_id VARCHAR(48) NOT NULL,
  token VARCHAR(256) NOT NULL,
  `authorization` VARCHAR(512) NOT NULL,
  challenge_type ENUM('http-01', 'dns-01') NOT NULL,
  status ENUM('waiting', 'pending', 'verified', 'failed') NOT NULL DEFAULT 'waiting',
  expires_at BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY acme_challenges_domain (domain_id),
  KEY acme_challenges_status_expiry (status, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE certificates (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  hostname VARCHAR(253) NOT NULL,
  -- PEM chain (public).
  certificate TEXT NOT NULL,
  -- Sealed by the vault; never plaintext.
  encrypted_private_key BLOB NOT NULL,
  not_after BIGINT NOT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY certificates_id (id),
  UNIQUE KEY certificates_hostname (hostname),
  KEY certificates_not_after (not_after)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE builds (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  id VARCHAR(48) NOT NULL,
  workspace_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  deployment_id VARCHAR(48) NOT NULL,
  status ENUM('queued', 'running', 'succeeded', 'failed', 'cancelled') NOT NULL DEFAULT 'queued',
  git_repository VARCHAR(256) NULL,
  git_commit_sha VARCHAR(40) NULL,
  context_path VARCHAR(500) NOT NULL DEFAULT '.',
  dockerfile_path VARCHAR(500) NULL,
  image VARCHAR(512) NULL,
  error VARCHAR(1024) NULL,
  started_at BIGINT NULL,
  finished_at BIGINT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY builds_id (id),
  KEY builds_deployment (deployment_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
