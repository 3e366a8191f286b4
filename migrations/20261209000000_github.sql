-- The GitHub App (issue 18): apps connected to repositories, and what a
-- deployment made by a webhook remembers of it.

-- An app connected to a GitHub repository through an installation of the
-- GitHub App: pushes to its default branch deploy production, other
-- branches and pull requests deploy previews.
CREATE TABLE github_repo_connections (
  pk BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  workspace_id VARCHAR(48) NOT NULL,
  project_id VARCHAR(48) NOT NULL,
  app_id VARCHAR(48) NOT NULL,
  installation_id BIGINT NOT NULL,
  -- "owner/repo" as GitHub spells it; matched case-insensitively.
  repository_full_name VARCHAR(256) NOT NULL,
  repository_key VARCHAR(256) AS (LOWER(repository_full_name)) STORED,
  -- GitHub's id of the repository, learnt from the first webhook (renames
  -- keep it).
  repository_id BIGINT NULL,
  created_at BIGINT NOT NULL,
  updated_at BIGINT NOT NULL,
  UNIQUE KEY github_repo_connections_app (app_id),
  KEY github_repo_connections_repository (repository_key),
  KEY github_repo_connections_installation (installation_id),
  KEY github_repo_connections_workspace (workspace_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The pull request a preview deployment was made for (closing it stops
-- the preview), and who pushed.
ALTER TABLE deployments
  ADD COLUMN git_pr_number INT UNSIGNED NULL AFTER fork_repository,
  ADD KEY deployments_pr (git_pr_number, app_id);
