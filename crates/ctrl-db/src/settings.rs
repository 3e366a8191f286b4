//! Per-environment app settings (build, runtime, regions) and environment
//! variables (values always sealed).

use sqlx::types::Json;
use sqlx::{FromRow, MySqlConnection, MySqlExecutor};

use crate::types::{EnvVarKind, HealthCheck, ShutdownSignal, UpstreamProtocol};
use crate::{Error, Result};

/// The environment a settings row belongs to.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// Owner.
    pub workspace_id: &'a str,
    /// The app.
    pub app_id: &'a str,
    /// The environment.
    pub environment_id: &'a str,
}

/// How an app is built.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct BuildSettings {
    /// Dockerfile path; `None` = detect.
    pub dockerfile: Option<String>,
    /// Build context.
    pub docker_context: String,
    /// Build command for detected builds.
    pub build_command: Option<String>,
    /// Globs a push must touch to deploy.
    pub watch_paths: Json<Vec<String>>,
    /// Deploy on push.
    pub auto_deploy: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            dockerfile: None,
            docker_context: ".".into(),
            build_command: None,
            watch_paths: Json(Vec::new()),
            auto_deploy: true,
        }
    }
}

/// How an app runs.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RuntimeSettings {
    /// Listening port.
    pub port: i32,
    /// CPU per instance.
    pub cpu_millicores: i32,
    /// Memory per instance.
    pub memory_mib: i32,
    /// Ephemeral disk per instance.
    pub storage_mib: i32,
    /// Command override.
    pub command: Json<Vec<String>>,
    /// Health check.
    pub healthcheck: Option<Json<HealthCheck>>,
    /// Stop signal.
    pub shutdown_signal: ShutdownSignal,
    /// Seconds from stop signal to kill.
    pub termination_grace_seconds: i32,
    /// Edge protocol.
    pub upstream_protocol: UpstreamProtocol,
    /// OpenAPI document path.
    pub openapi_spec_path: Option<String>,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            port: 8080,
            cpu_millicores: 250,
            memory_mib: 256,
            storage_mib: 0,
            command: Json(Vec::new()),
            healthcheck: None,
            shutdown_signal: ShutdownSignal::Sigterm,
            termination_grace_seconds: 30,
            upstream_protocol: UpstreamProtocol::Http1,
            openapi_spec_path: None,
        }
    }
}

/// Creates or replaces an environment's build settings.
pub async fn upsert_build(
    ex: impl MySqlExecutor<'_>,
    scope: Scope<'_>,
    s: &BuildSettings,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_build_settings
           (workspace_id, app_id, environment_id, dockerfile, docker_context, build_command, watch_paths,
            auto_deploy, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE dockerfile = VALUES(dockerfile), docker_context = VALUES(docker_context),
           build_command = VALUES(build_command), watch_paths = VALUES(watch_paths),
           auto_deploy = VALUES(auto_deploy), updated_at = VALUES(updated_at)",
    )
    .bind(scope.workspace_id)
    .bind(scope.app_id)
    .bind(scope.environment_id)
    .bind(&s.dockerfile)
    .bind(&s.docker_context)
    .bind(&s.build_command)
    .bind(&s.watch_paths)
    .bind(s.auto_deploy)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// An environment's build settings.
pub async fn get_build(ex: impl MySqlExecutor<'_>, environment_id: &str) -> Result<BuildSettings> {
    sqlx::query_as(
        "SELECT dockerfile, docker_context, build_command, watch_paths, auto_deploy
         FROM app_build_settings WHERE environment_id = ?",
    )
    .bind(environment_id)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("build settings"))
}

/// Creates or replaces an environment's runtime settings.
pub async fn upsert_runtime(
    ex: impl MySqlExecutor<'_>,
    scope: Scope<'_>,
    s: &RuntimeSettings,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_runtime_settings
           (workspace_id, app_id, environment_id, port, cpu_millicores, memory_mib, storage_mib, command,
            healthcheck, shutdown_signal, termination_grace_seconds, upstream_protocol, openapi_spec_path,
            created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE port = VALUES(port), cpu_millicores = VALUES(cpu_millicores),
           memory_mib = VALUES(memory_mib), storage_mib = VALUES(storage_mib), command = VALUES(command),
           healthcheck = VALUES(healthcheck), shutdown_signal = VALUES(shutdown_signal),
           termination_grace_seconds = VALUES(termination_grace_seconds),
           upstream_protocol = VALUES(upstream_protocol), openapi_spec_path = VALUES(openapi_spec_path),
           updated_at = VALUES(updated_at)",
    )
    .bind(scope.workspace_id)
    .bind(scope.app_id)
    .bind(scope.environment_id)
    .bind(s.port)
    .bind(s.cpu_millicores)
    .bind(s.memory_mib)
    .bind(s.storage_mib)
    .bind(&s.command)
    .bind(&s.healthcheck)
    .bind(s.shutdown_signal)
    .bind(s.termination_grace_seconds)
    .bind(s.upstream_protocol)
    .bind(&s.openapi_spec_path)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// An environment's runtime settings.
pub async fn get_runtime(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<RuntimeSettings> {
    sqlx::query_as(
        "SELECT port, cpu_millicores, memory_mib, storage_mib, command, healthcheck, shutdown_signal,
                termination_grace_seconds, upstream_protocol, openapi_spec_path
         FROM app_runtime_settings WHERE environment_id = ?",
    )
    .bind(environment_id)
    .fetch_optional(ex)
    .await?
    .ok_or(Error::NotFound("runtime settings"))
}

/// Where and how widely an app runs in one region.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct RegionalSetting {
    /// The region.
    pub region_id: String,
    /// Region name (read only).
    pub region_name: String,
    /// Region platform (read only).
    pub region_platform: String,
    /// Whether the region accepts new deployments (read only).
    pub can_schedule: bool,
    /// Replica bounds.
    pub min_replicas: u32,
    /// Replica bounds.
    pub max_replicas: u32,
    /// CPU scale-out threshold, 0 = default.
    pub cpu_threshold_percent: u8,
    /// Memory scale-out threshold, 0 = off.
    pub memory_threshold_percent: u8,
}

/// The replica policy to store for one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionPolicy<'a> {
    /// The region.
    pub region_id: &'a str,
    /// Replica bounds.
    pub min_replicas: u32,
    /// Replica bounds.
    pub max_replicas: u32,
    /// CPU threshold.
    pub cpu_threshold_percent: u8,
    /// Memory threshold.
    pub memory_threshold_percent: u8,
}

/// The environment's regions with their names and schedulability, by platform and name.
pub async fn list_regional(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<Vec<RegionalSetting>> {
    Ok(sqlx::query_as(
        "SELECT s.region_id, r.name AS region_name, r.platform AS region_platform, r.can_schedule,
                s.min_replicas, s.max_replicas, s.cpu_threshold_percent, s.memory_threshold_percent
         FROM app_regional_settings s JOIN regions r ON r.id = s.region_id
         WHERE s.environment_id = ? ORDER BY r.platform, r.name",
    )
    .bind(environment_id)
    .fetch_all(ex)
    .await?)
}

/// Replaces the environment's regional settings with `policies` (call in a transaction).
pub async fn replace_regional(
    conn: &mut MySqlConnection,
    scope: Scope<'_>,
    policies: &[RegionPolicy<'_>],
    now: i64,
) -> Result<()> {
    sqlx::query("DELETE FROM app_regional_settings WHERE environment_id = ?")
        .bind(scope.environment_id)
        .execute(&mut *conn)
        .await?;
    for p in policies {
        sqlx::query(
            "INSERT INTO app_regional_settings
               (workspace_id, app_id, environment_id, region_id, min_replicas, max_replicas,
                cpu_threshold_percent, memory_threshold_percent, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(scope.workspace_id)
        .bind(scope.app_id)
        .bind(scope.environment_id)
        .bind(p.region_id)
        .bind(p.min_replicas)
        .bind(p.max_replicas)
        .bind(p.cpu_threshold_percent)
        .bind(p.memory_threshold_percent)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A stored environment variable; the value stays sealed.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EnvVar {
    /// `evr_…`
    pub id: String,
    /// Name.
    pub key: String,
    /// The sealed value.
    pub encrypted_value: Vec<u8>,
    /// Recoverable or write-only.
    pub kind: EnvVarKind,
    /// Also handed to image builds as a secret.
    pub build_secret: bool,
    /// Free text.
    pub description: String,
    /// Unix ms.
    pub updated_at: i64,
}

/// A variable to store; the value is already sealed.
#[derive(Debug, Clone, Copy)]
pub struct NewEnvVar<'a> {
    /// Id to use if the variable is new.
    pub id: &'a str,
    /// Name.
    pub key: &'a str,
    /// The sealed value.
    pub encrypted_value: &'a [u8],
    /// Recoverable or write-only.
    pub kind: EnvVarKind,
    /// Also handed to image builds as a secret.
    pub build_secret: bool,
    /// Free text.
    pub description: &'a str,
}

/// Creates or replaces one variable (by environment and key).
pub async fn upsert_env_var(
    ex: impl MySqlExecutor<'_>,
    scope: Scope<'_>,
    var: NewEnvVar<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO app_environment_variables
           (id, workspace_id, app_id, environment_id, `key`, encrypted_value, kind, build_secret, description, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON DUPLICATE KEY UPDATE encrypted_value = VALUES(encrypted_value), kind = VALUES(kind),
           build_secret = VALUES(build_secret), description = VALUES(description), updated_at = VALUES(updated_at)",
    )
    .bind(var.id)
    .bind(scope.workspace_id)
    .bind(scope.app_id)
    .bind(scope.environment_id)
    .bind(var.key)
    .bind(var.encrypted_value)
    .bind(var.kind)
    .bind(var.build_secret)
    .bind(var.description)
    .bind(now)
    .bind(now)
    .execute(ex)
    .await?;
    Ok(())
}

/// An environment's variables by key.
pub async fn list_env_vars(
    ex: impl MySqlExecutor<'_>,
    environment_id: &str,
) -> Result<Vec<EnvVar>> {
    Ok(sqlx::query_as(
        "SELECT id, `key`, encrypted_value, kind, build_secret, description, updated_at
         FROM app_environment_variables WHERE environment_id = ? ORDER BY `key`",
    )
    .bind(environment_id)
    .fetch_all(ex)
    .await?)
}

/// Deletes variables by key (call in a transaction); returns the keys that existed.
pub async fn delete_env_vars(
    conn: &mut MySqlConnection,
    environment_id: &str,
    keys: &[String],
) -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for key in keys {
        let done = sqlx::query(
            "DELETE FROM app_environment_variables WHERE environment_id = ? AND `key` = ?",
        )
        .bind(environment_id)
        .bind(key)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 1 {
            deleted.push(key.clone());
        }
    }
    Ok(deleted)
}
