use anyhow::Result;
use ctrl_core::id::IdKind;
use ctrl_db::settings::{self, BuildSettings, NewEnvVar, RegionPolicy, RuntimeSettings, Scope};
use ctrl_db::types::{EnvVarKind, HealthCheck, ShutdownSignal, UpstreamProtocol};
use ctrl_db::{Error, cluster};
use ctrl_testkit::test_database;
use sqlx::types::Json;

use crate::fixtures::{NOW, id, tree};

#[tokio::test]
async fn build_and_runtime_settings_round_trip_and_upsert() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let scope = Scope {
        workspace_id: &t.workspace,
        app_id: &t.app,
        environment_id: &t.production,
    };
    assert!(matches!(
        settings::get_build(&db.pool, &t.production).await,
        Err(Error::NotFound(_))
    ));

    settings::upsert_build(&db.pool, scope, &BuildSettings::default(), NOW).await?;
    assert_eq!(
        settings::get_build(&db.pool, &t.production).await?,
        BuildSettings::default()
    );
    let custom = BuildSettings {
        dockerfile: Some("deploy/Dockerfile".into()),
        docker_context: "services/api".into(),
        build_command: Some("make".into()),
        watch_paths: Json(vec!["services/api/**".into(), "go.mod".into()]),
        auto_deploy: false,
    };
    settings::upsert_build(&db.pool, scope, &custom, NOW + 1).await?;
    assert_eq!(settings::get_build(&db.pool, &t.production).await?, custom);

    settings::upsert_runtime(&db.pool, scope, &RuntimeSettings::default(), NOW).await?;
    assert_eq!(
        settings::get_runtime(&db.pool, &t.production).await?,
        RuntimeSettings::default()
    );
    let runtime = RuntimeSettings {
        port: 3000,
        cpu_millicores: 500,
        memory_mib: 512,
        storage_mib: 1024,
        command: Json(vec!["./server".into(), "--flag=ü".into()]),
        healthcheck: Some(Json(HealthCheck {
            method: "GET".into(),
            path: "/healthz".into(),
            interval_seconds: 5,
            timeout_seconds: 1,
            failure_threshold: 3,
            initial_delay_seconds: 2,
        })),
        shutdown_signal: ShutdownSignal::Sigint,
        termination_grace_seconds: 10,
        upstream_protocol: UpstreamProtocol::H2c,
        openapi_spec_path: Some("/openapi.json".into()),
    };
    settings::upsert_runtime(&db.pool, scope, &runtime, NOW + 1).await?;
    assert_eq!(
        settings::get_runtime(&db.pool, &t.production).await?,
        runtime
    );
    Ok(())
}

#[tokio::test]
async fn regional_settings_are_replaced_and_joined_with_regions() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let scope = Scope {
        workspace_id: &t.workspace,
        app_id: &t.app,
        environment_id: &t.production,
    };
    let mut conn = db.pool.acquire().await?;
    let eu =
        cluster::upsert_region(&mut conn, &id(IdKind::Region), "eu-west-1", "aws", NOW).await?;
    cluster::set_can_schedule(&db.pool, &eu.id, false, NOW).await?;

    let policy = |region_id| RegionPolicy {
        region_id,
        min_replicas: 1,
        max_replicas: 3,
        cpu_threshold_percent: 70,
        memory_threshold_percent: 0,
    };
    let mut tx = db.pool.begin().await?;
    settings::replace_regional(&mut tx, scope, &[policy(&t.region), policy(&eu.id)], NOW).await?;
    tx.commit().await?;
    let rows = settings::list_regional(&db.pool, &t.production).await?;
    let names: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.region_platform.as_str(),
                r.region_name.as_str(),
                r.can_schedule,
            )
        })
        .collect();
    assert_eq!(names, [("aws", "eu-west-1", false), ("dev", "local", true)]);
    assert_eq!(
        (
            rows[1].min_replicas,
            rows[1].max_replicas,
            rows[1].cpu_threshold_percent
        ),
        (1, 3, 70)
    );

    let mut tx = db.pool.begin().await?;
    settings::replace_regional(&mut tx, scope, &[policy(&t.region)], NOW).await?;
    tx.commit().await?;
    assert_eq!(
        settings::list_regional(&db.pool, &t.production)
            .await?
            .len(),
        1
    );
    Ok(())
}

fn var<'a>(
    id: &'a str,
    key: &'a str,
    sealed: &'a [u8],
    kind: EnvVarKind,
    description: &'a str,
) -> NewEnvVar<'a> {
    NewEnvVar {
        id,
        key,
        encrypted_value: sealed,
        kind,
        build_secret: false,
        description,
    }
}

#[tokio::test]
async fn environment_variables_upsert_list_and_delete() -> Result<()> {
    let db = test_database().await?;
    let t = tree(&db.pool).await?;
    let scope = Scope {
        workspace_id: &t.workspace,
        app_id: &t.app,
        environment_id: &t.production,
    };
    for (key, sealed) in [
        ("DATABASE_URL", b"sealed-1".as_slice()),
        ("API_KEY", b"sealed-2"),
    ] {
        settings::upsert_env_var(
            &db.pool,
            scope,
            var(
                &id(IdKind::EnvironmentVariable),
                key,
                sealed,
                EnvVarKind::Recoverable,
                "",
            ),
            NOW,
        )
        .await?;
    }
    settings::upsert_env_var(
        &db.pool,
        scope,
        var(
            &id(IdKind::EnvironmentVariable),
            "API_KEY",
            b"sealed-3",
            EnvVarKind::Writeonly,
            "rotated",
        ),
        NOW + 1,
    )
    .await?;
    let vars = settings::list_env_vars(&db.pool, &t.production).await?;
    let view: Vec<_> = vars
        .iter()
        .map(|v| (v.key.as_str(), v.encrypted_value.as_slice(), v.kind))
        .collect();
    assert_eq!(
        view,
        [
            ("API_KEY", b"sealed-3".as_slice(), EnvVarKind::Writeonly),
            ("DATABASE_URL", b"sealed-1", EnvVarKind::Recoverable)
        ]
    );
    assert!(
        settings::list_env_vars(&db.pool, &t.preview)
            .await?
            .is_empty(),
        "per environment"
    );

    let mut tx = db.pool.begin().await?;
    let deleted = settings::delete_env_vars(
        &mut tx,
        &t.production,
        &["API_KEY".into(), "MISSING".into()],
    )
    .await?;
    tx.commit().await?;
    assert_eq!(deleted, ["API_KEY"]);
    assert_eq!(
        settings::list_env_vars(&db.pool, &t.production)
            .await?
            .len(),
        1
    );
    Ok(())
}
