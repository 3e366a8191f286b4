//! AppService settings and environment variables, per environment of an app.
//!
//! Variable values are sealed with the vault (keyring = environment id)
//! before they reach the database, and are only opened when a caller asks
//! to reveal RECOVERABLE ones. Values never appear in logs or errors.

use ctrl_core::id::{self, IdKind};
use ctrl_core::settings as rules;
use ctrl_db::settings::{self as db, NewEnvVar, RegionPolicy, Scope};
use ctrl_db::types::{EnvVarKind, HealthCheck, ShutdownSignal, UpstreamProtocol};
use ctrl_db::{cluster, tenancy};
use ctrl_proto::ctrl::v1 as pb;
use sqlx::types::Json;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

/// Largest environment variable value.
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most variables per request.
const MAX_VARIABLES: usize = 500;
/// Highest replica count per region.
const MAX_REPLICAS: u32 = 100;

/// The app and environment a request addresses, resolved.
struct Target {
    workspace_id: String,
    app_id: String,
    environment_id: String,
}

impl Target {
    fn scope(&self) -> Scope<'_> {
        Scope {
            workspace_id: &self.workspace_id,
            app_id: &self.app_id,
            environment_id: &self.environment_id,
        }
    }
}

async fn target(s: &AppState, app_id: &str, environment_slug: &str) -> Result<Target, ApiError> {
    validate::id("app_id", IdKind::App, app_id)?;
    validate::slug("environment_slug", environment_slug)?;
    let app = tenancy::get_app(s.db(), app_id).await?;
    let env = tenancy::find_environment_by_slug(s.db(), app_id, environment_slug).await?;
    Ok(Target {
        workspace_id: app.workspace_id,
        app_id: app.id,
        environment_id: env.id,
    })
}

// === conversions ===

fn build_to_pb(b: db::BuildSettings) -> pb::BuildSettings {
    pb::BuildSettings {
        dockerfile: b.dockerfile.unwrap_or_default(),
        docker_context: b.docker_context,
        build_command: b.build_command.unwrap_or_default(),
        watch_paths: b.watch_paths.0,
        auto_deploy: b.auto_deploy,
    }
}

fn build_from_pb(b: pb::BuildSettings) -> Result<db::BuildSettings, ApiError> {
    let non_empty = |s: String| (!s.trim().is_empty()).then_some(s);
    if b.dockerfile.len() > 500 || b.docker_context.len() > 500 || b.build_command.len() > 1000 {
        return Err(ApiError::invalid(
            "build",
            "dockerfile and docker_context are limited to 500 characters, build_command to 1000",
        ));
    }
    if b.docker_context.starts_with('/') || b.docker_context.split('/').any(|p| p == "..") {
        return Err(ApiError::invalid(
            "build.docker_context",
            "must be a relative path inside the repository",
        ));
    }
    if b.watch_paths.len() > 100 || b.watch_paths.iter().any(|p| p.is_empty() || p.len() > 256) {
        return Err(ApiError::invalid(
            "build.watch_paths",
            "at most 100 non-empty globs of at most 256 characters",
        ));
    }
    Ok(db::BuildSettings {
        dockerfile: non_empty(b.dockerfile),
        docker_context: if b.docker_context.is_empty() {
            ".".into()
        } else {
            b.docker_context
        },
        build_command: non_empty(b.build_command),
        watch_paths: Json(b.watch_paths),
        auto_deploy: b.auto_deploy,
    })
}

/// The runtime settings as the API shows them.
pub fn runtime_to_pb(r: db::RuntimeSettings) -> pb::RuntimeSettings {
    pb::RuntimeSettings {
        port: r.port,
        cpu_millicores: r.cpu_millicores,
        memory_mib: r.memory_mib,
        storage_mib: r.storage_mib,
        command: r.command.0,
        health_check: r
            .healthcheck
            .map(|Json(h)| ctrl_cluster_sync::convert::health_check(&h)),
        shutdown_signal: ctrl_cluster_sync::convert::shutdown_signal(r.shutdown_signal) as i32,
        termination_grace_seconds: r.termination_grace_seconds,
        upstream_protocol: ctrl_cluster_sync::convert::upstream_protocol(r.upstream_protocol)
            as i32,
        openapi_spec_path: r.openapi_spec_path.unwrap_or_default(),
    }
}

fn runtime_from_pb(r: pb::RuntimeSettings) -> Result<db::RuntimeSettings, ApiError> {
    let health = r.health_check.map(|h| HealthCheck {
        method: if h.method == pb::HealthCheckMethod::Post as i32 {
            "POST"
        } else {
            "GET"
        }
        .into(),
        path: h.path,
        interval_seconds: if h.interval_seconds == 0 {
            10
        } else {
            h.interval_seconds
        },
        timeout_seconds: if h.timeout_seconds == 0 {
            2
        } else {
            h.timeout_seconds
        },
        failure_threshold: if h.failure_threshold == 0 {
            3
        } else {
            h.failure_threshold
        },
        initial_delay_seconds: h.initial_delay_seconds,
    });
    let problems = rules::validate_runtime(&rules::Runtime {
        port: r.port,
        cpu_millicores: r.cpu_millicores,
        memory_mib: r.memory_mib,
        storage_mib: r.storage_mib,
        health_check_path: health.as_ref().map(|h| h.path.as_str()),
        termination_grace_seconds: r.termination_grace_seconds,
    });
    if let Some(first) = problems.into_iter().next() {
        return Err(ApiError::invalid(&first.field, first.message));
    }
    if let Some(h) = &health
        && (!(1..=3600).contains(&h.interval_seconds)
            || !(1..=600).contains(&h.timeout_seconds)
            || !(1..=100).contains(&h.failure_threshold)
            || !(0..=3600).contains(&h.initial_delay_seconds))
    {
        return Err(ApiError::invalid(
            "runtime.health_check",
            "interval 1-3600 s, timeout 1-600 s, failure threshold 1-100, initial delay 0-3600 s",
        ));
    }
    if r.command.len() > 64 || r.command.iter().any(|c| c.len() > 4096) {
        return Err(ApiError::invalid(
            "runtime.command",
            "at most 64 arguments of at most 4096 bytes",
        ));
    }
    let shutdown_signal = match pb::ShutdownSignal::try_from(r.shutdown_signal) {
        Ok(pb::ShutdownSignal::Sigint) => ShutdownSignal::Sigint,
        Ok(pb::ShutdownSignal::Sigquit) => ShutdownSignal::Sigquit,
        Ok(pb::ShutdownSignal::Sigkill) => ShutdownSignal::Sigkill,
        Ok(_) => ShutdownSignal::Sigterm,
        Err(_) => {
            return Err(ApiError::invalid(
                "runtime.shutdown_signal",
                "unknown signal",
            ));
        }
    };
    let upstream_protocol = match pb::UpstreamProtocol::try_from(r.upstream_protocol) {
        Ok(pb::UpstreamProtocol::H2c) => UpstreamProtocol::H2c,
        Ok(_) => UpstreamProtocol::Http1,
        Err(_) => {
            return Err(ApiError::invalid(
                "runtime.upstream_protocol",
                "unknown protocol",
            ));
        }
    };
    Ok(db::RuntimeSettings {
        port: r.port,
        cpu_millicores: r.cpu_millicores,
        memory_mib: r.memory_mib,
        storage_mib: r.storage_mib,
        command: Json(r.command),
        healthcheck: health.map(Json),
        shutdown_signal,
        termination_grace_seconds: if r.termination_grace_seconds == 0 {
            30
        } else {
            r.termination_grace_seconds
        },
        upstream_protocol,
        openapi_spec_path: (!r.openapi_spec_path.is_empty()).then_some(r.openapi_spec_path),
    })
}

fn regional_to_pb(r: db::RegionalSetting) -> pb::RegionalSettings {
    pb::RegionalSettings {
        region_id: r.region_id,
        region_name: r.region_name,
        region_platform: r.region_platform,
        autoscaling: Some(pb::AutoscalingPolicy {
            min_replicas: r.min_replicas,
            max_replicas: r.max_replicas,
            cpu_threshold_percent: u32::from(r.cpu_threshold_percent),
            memory_threshold_percent: u32::from(r.memory_threshold_percent),
        }),
    }
}

async fn load(s: &AppState, t: &Target) -> Result<pb::AppSettings, ApiError> {
    Ok(pb::AppSettings {
        app_id: t.app_id.clone(),
        environment_id: t.environment_id.clone(),
        build: Some(build_to_pb(db::get_build(s.db(), &t.environment_id).await?)),
        runtime: Some(runtime_to_pb(
            db::get_runtime(s.db(), &t.environment_id).await?,
        )),
        regions: db::list_regional(s.db(), &t.environment_id)
            .await?
            .into_iter()
            .map(regional_to_pb)
            .collect(),
    })
}

/// AppService.GetAppSettings
pub async fn get_app_settings(
    s: &AppState,
    req: pb::GetAppSettingsRequest,
) -> Result<pb::GetAppSettingsResponse, ApiError> {
    let t = target(s, &req.app_id, &req.environment_slug).await?;
    Ok(pb::GetAppSettingsResponse {
        settings: Some(load(s, &t).await?),
    })
}

/// AppService.UpdateAppSettings: every present group is validated first,
/// then all are written in one transaction.
pub async fn update_app_settings(
    s: &AppState,
    req: pb::UpdateAppSettingsRequest,
) -> Result<pb::UpdateAppSettingsResponse, ApiError> {
    let t = target(s, &req.app_id, &req.environment_slug).await?;
    let build = req.build.map(build_from_pb).transpose()?;
    let runtime = req.runtime.map(runtime_from_pb).transpose()?;
    let regions = match req.regions {
        Some(list) => {
            let known = cluster::list_regions(s.db()).await?;
            let mut policies = Vec::with_capacity(list.regions.len());
            for (i, r) in list.regions.iter().enumerate() {
                let field = format!("regions.regions[{i}]");
                if !known.iter().any(|k| k.id == r.region_id) {
                    return Err(ApiError::invalid(
                        &field,
                        format!("unknown region {:?}", r.region_id),
                    ));
                }
                if list.regions[..i].iter().any(|o| o.region_id == r.region_id) {
                    return Err(ApiError::invalid(&field, "the region is listed twice"));
                }
                let a = r.autoscaling.unwrap_or(pb::AutoscalingPolicy {
                    min_replicas: 1,
                    max_replicas: 1,
                    ..Default::default()
                });
                rules::validate_autoscaling(&field, a.min_replicas, a.max_replicas, MAX_REPLICAS)
                    .map_err(|e| ApiError::invalid(&e.field, e.message))?;
                if a.cpu_threshold_percent > 100 || a.memory_threshold_percent > 100 {
                    return Err(ApiError::invalid(
                        &field,
                        "thresholds are percentages (0-100)",
                    ));
                }
                policies.push((r.region_id.clone(), a));
            }
            Some(policies)
        }
        None => None,
    };

    let now = s.now_ms();
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    if let Some(build) = &build {
        db::upsert_build(&mut *tx, t.scope(), build, now).await?;
    }
    if let Some(runtime) = &runtime {
        db::upsert_runtime(&mut *tx, t.scope(), runtime, now).await?;
    }
    if let Some(policies) = &regions {
        let rows: Vec<RegionPolicy<'_>> = policies
            .iter()
            .map(|(region_id, a)| RegionPolicy {
                region_id,
                min_replicas: a.min_replicas,
                max_replicas: a.max_replicas,
                cpu_threshold_percent: u8::try_from(a.cpu_threshold_percent).unwrap_or(100),
                memory_threshold_percent: u8::try_from(a.memory_threshold_percent).unwrap_or(100),
            })
            .collect();
        db::replace_regional(&mut tx, t.scope(), &rows, now).await?;
    }
    tx.commit().await.map_err(ctrl_db::Error::from)?;
    Ok(pb::UpdateAppSettingsResponse {
        settings: Some(load(s, &t).await?),
    })
}

/// AppService.ListEnvironmentVariables
pub async fn list_environment_variables(
    s: &AppState,
    req: pb::ListEnvironmentVariablesRequest,
) -> Result<pb::ListEnvironmentVariablesResponse, ApiError> {
    let t = target(s, &req.app_id, &req.environment_slug).await?;
    let mut variables = Vec::new();
    for v in db::list_env_vars(s.db(), &t.environment_id).await? {
        let value = if req.reveal_values && v.kind == EnvVarKind::Recoverable {
            let plain = s.vault().open(&t.environment_id, &v.encrypted_value).map_err(|e| {
                tracing::error!(key = %v.key, error = %e, "cannot open a stored environment variable");
                ApiError::Internal("a stored value could not be decrypted".into())
            })?;
            String::from_utf8(plain.to_vec())
                .map_err(|_| ApiError::Internal("a stored value is not UTF-8".into()))?
        } else {
            String::new()
        };
        variables.push(pb::EnvironmentVariable {
            key: v.key,
            value,
            r#type: match v.kind {
                EnvVarKind::Recoverable => pb::EnvironmentVariableType::Recoverable,
                EnvVarKind::Writeonly => pb::EnvironmentVariableType::Writeonly,
            } as i32,
            description: v.description,
            updated_at: v.updated_at,
            build_secret: v.build_secret,
        });
    }
    Ok(pb::ListEnvironmentVariablesResponse { variables })
}

/// AppService.SetEnvironmentVariables: all or nothing.
pub async fn set_environment_variables(
    s: &AppState,
    req: pb::SetEnvironmentVariablesRequest,
) -> Result<pb::SetEnvironmentVariablesResponse, ApiError> {
    let t = target(s, &req.app_id, &req.environment_slug).await?;
    if req.variables.is_empty() || req.variables.len() > MAX_VARIABLES {
        return Err(ApiError::invalid(
            "variables",
            format!("must hold 1-{MAX_VARIABLES} variables"),
        ));
    }
    let mut sealed = Vec::with_capacity(req.variables.len());
    for (i, v) in req.variables.iter().enumerate() {
        let field = format!("variables[{i}]");
        rules::validate_env_key(&v.key)
            .map_err(|e| ApiError::invalid(&format!("{field}.key"), e.message))?;
        if req.variables[..i].iter().any(|o| o.key == v.key) {
            return Err(ApiError::invalid(
                &format!("{field}.key"),
                format!("{:?} is given twice", v.key),
            ));
        }
        if v.value.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(
                &format!("{field}.value"),
                format!("must be at most {MAX_VALUE_BYTES} bytes"),
            ));
        }
        if v.description.chars().count() > 512 {
            return Err(ApiError::invalid(
                &format!("{field}.description"),
                "must be at most 512 characters",
            ));
        }
        let kind = match pb::EnvironmentVariableType::try_from(v.r#type) {
            Ok(pb::EnvironmentVariableType::Writeonly) => EnvVarKind::Writeonly,
            Ok(_) => EnvVarKind::Recoverable,
            Err(_) => return Err(ApiError::invalid(&format!("{field}.type"), "unknown type")),
        };
        let value = s
            .vault()
            .seal(&t.environment_id, v.value.as_bytes())
            .map_err(|e| {
                tracing::error!(error = %e, "cannot seal an environment variable");
                ApiError::Internal("the value could not be encrypted".into())
            })?;
        sealed.push((
            v.key.clone(),
            value,
            kind,
            v.build_secret,
            v.description.clone(),
        ));
    }
    let now = s.now_ms();
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    for (key, value, kind, build_secret, description) in &sealed {
        let var_id = id::generate(IdKind::EnvironmentVariable, &mut rand::rng());
        let var = NewEnvVar {
            id: &var_id,
            key,
            encrypted_value: value,
            kind: *kind,
            build_secret: *build_secret,
            description,
        };
        db::upsert_env_var(&mut *tx, t.scope(), var, now).await?;
    }
    tx.commit().await.map_err(ctrl_db::Error::from)?;
    Ok(pb::SetEnvironmentVariablesResponse {
        keys: sealed.into_iter().map(|(k, ..)| k).collect(),
    })
}

/// AppService.DeleteEnvironmentVariables
pub async fn delete_environment_variables(
    s: &AppState,
    req: pb::DeleteEnvironmentVariablesRequest,
) -> Result<pb::DeleteEnvironmentVariablesResponse, ApiError> {
    let t = target(s, &req.app_id, &req.environment_slug).await?;
    if req.keys.is_empty() || req.keys.len() > MAX_VARIABLES {
        return Err(ApiError::invalid(
            "keys",
            format!("must hold 1-{MAX_VARIABLES} keys"),
        ));
    }
    let mut tx = s.db().begin().await.map_err(ctrl_db::Error::from)?;
    let deleted_keys = db::delete_env_vars(&mut tx, &t.environment_id, &req.keys).await?;
    tx.commit().await.map_err(ctrl_db::Error::from)?;
    Ok(pb::DeleteEnvironmentVariablesResponse { deleted_keys })
}
