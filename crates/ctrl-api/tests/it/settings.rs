use anyhow::Result;
use ctrl_api::error::ApiError;
use ctrl_api::services::settings as svc;
use ctrl_db::cluster;
use ctrl_proto::ctrl::v1 as pb;

use crate::state;

async fn app(s: &ctrl_api::state::AppState) -> Result<String> {
    Ok(crate::fixtures::app(s, false).await?.app.id)
}

fn var(key: &str, value: &str, kind: pb::EnvironmentVariableType) -> pb::EnvironmentVariable {
    pb::EnvironmentVariable {
        key: key.into(),
        value: value.into(),
        r#type: kind as i32,
        description: String::new(),
        updated_at: 0,
        build_secret: false,
    }
}

#[tokio::test]
async fn environment_variables_are_sealed_revealed_on_request_and_write_only_stays_hidden()
-> Result<()> {
    let s = state().await?;
    let app_id = app(&s).await?;
    let set = pb::SetEnvironmentVariablesRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
        variables: vec![
            var(
                "DATABASE_URL",
                "mysql://u:s3cret@db/app",
                pb::EnvironmentVariableType::Recoverable,
            ),
            var(
                "API_KEY",
                "sk_live_hidden",
                pb::EnvironmentVariableType::Writeonly,
            ),
        ],
        actor: None,
    };
    assert_eq!(
        svc::set_environment_variables(&s, set).await?.keys,
        ["DATABASE_URL", "API_KEY"]
    );

    // Never plaintext in the database.
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT encrypted_value FROM app_environment_variables")
            .fetch_all(s.db())
            .await?;
    assert_eq!(stored.len(), 2);
    for blob in &stored {
        assert!(
            !blob.windows(6).any(|w| w == b"s3cret" || w == b"hidden"),
            "plaintext stored"
        );
    }

    let list = |reveal| pb::ListEnvironmentVariablesRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
        reveal_values: reveal,
    };
    let hidden = svc::list_environment_variables(&s, list(false))
        .await?
        .variables;
    assert!(hidden.iter().all(|v| v.value.is_empty()));
    let revealed = svc::list_environment_variables(&s, list(true))
        .await?
        .variables;
    let view: Vec<_> = revealed
        .iter()
        .map(|v| (v.key.as_str(), v.value.as_str()))
        .collect();
    assert_eq!(
        view,
        [("API_KEY", ""), ("DATABASE_URL", "mysql://u:s3cret@db/app")]
    );
    let preview = pb::ListEnvironmentVariablesRequest {
        environment_slug: "preview".into(),
        ..list(true)
    };
    assert!(
        svc::list_environment_variables(&s, preview)
            .await?
            .variables
            .is_empty(),
        "per environment"
    );

    // Bad keys are named; nothing is half-written.
    let bad = pb::SetEnvironmentVariablesRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
        variables: vec![
            var("OK_KEY", "1", pb::EnvironmentVariableType::Recoverable),
            var(
                "1BAD",
                "sentinel-secret-value",
                pb::EnvironmentVariableType::Recoverable,
            ),
        ],
        actor: None,
    };
    let err = svc::set_environment_variables(&s, bad).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::InvalidArgument { field, .. } if field == "variables[1].key"),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("sentinel-secret-value"),
        "values never in errors"
    );
    assert_eq!(
        svc::list_environment_variables(&s, list(false))
            .await?
            .variables
            .len(),
        2
    );

    let deleted = svc::delete_environment_variables(
        &s,
        pb::DeleteEnvironmentVariablesRequest {
            app_id: app_id.clone(),
            environment_slug: "production".into(),
            keys: vec!["API_KEY".into(), "NOPE".into()],
            actor: None,
        },
    )
    .await?;
    assert_eq!(deleted.deleted_keys, ["API_KEY"]);
    Ok(())
}

#[tokio::test]
async fn settings_are_read_updated_by_group_and_validated() -> Result<()> {
    let s = state().await?;
    let app_id = app(&s).await?;
    let mut conn = s.db().acquire().await?;
    let region =
        cluster::upsert_region(&mut conn, "rgn_00000000000000aa", "local", "dev", 1).await?;
    drop(conn);
    let get = || pb::GetAppSettingsRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
    };
    let before = svc::get_app_settings(&s, get()).await?.settings.unwrap();
    assert_eq!(before.runtime.as_ref().unwrap().port, 8080);

    let runtime = pb::RuntimeSettings {
        port: 3000,
        cpu_millicores: 500,
        memory_mib: 512,
        health_check: Some(pb::HealthCheck {
            path: "/healthz".into(),
            ..Default::default()
        }),
        ..before.runtime.clone().unwrap()
    };
    let regions = pb::RegionalSettingsList {
        regions: vec![pb::RegionalSettings {
            region_id: region.id.clone(),
            autoscaling: Some(pb::AutoscalingPolicy {
                min_replicas: 2,
                max_replicas: 4,
                cpu_threshold_percent: 70,
                memory_threshold_percent: 0,
            }),
            ..Default::default()
        }],
    };
    let after = svc::update_app_settings(
        &s,
        pb::UpdateAppSettingsRequest {
            app_id: app_id.clone(),
            environment_slug: "production".into(),
            build: None,
            runtime: Some(runtime),
            regions: Some(regions),
            actor: None,
        },
    )
    .await?
    .settings
    .unwrap();
    let r = after.runtime.unwrap();
    assert_eq!((r.port, r.cpu_millicores, r.memory_mib), (3000, 500, 512));
    let hc = r.health_check.unwrap();
    assert_eq!(
        (
            hc.path.as_str(),
            hc.interval_seconds,
            hc.timeout_seconds,
            hc.failure_threshold
        ),
        ("/healthz", 10, 2, 3),
        "defaults filled in"
    );
    assert_eq!(after.build, before.build, "absent groups stay as they were");
    assert_eq!(after.regions.len(), 1);
    assert_eq!(after.regions[0].region_name, "local");
    assert_eq!(
        after.regions[0].autoscaling.as_ref().unwrap().max_replicas,
        4
    );

    let bad_runtime = pb::UpdateAppSettingsRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
        runtime: Some(pb::RuntimeSettings {
            port: 70000,
            cpu_millicores: 500,
            memory_mib: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = svc::update_app_settings(&s, bad_runtime).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::InvalidArgument { field, .. } if field == "runtime.port"),
        "{err:?}"
    );
    let bad_region = pb::UpdateAppSettingsRequest {
        app_id: app_id.clone(),
        environment_slug: "production".into(),
        regions: Some(pb::RegionalSettingsList {
            regions: vec![pb::RegionalSettings {
                region_id: "rgn_0000000000000bad".into(),
                ..Default::default()
            }],
        }),
        ..Default::default()
    };
    let err = svc::update_app_settings(&s, bad_region).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::InvalidArgument { field, .. } if field == "regions.regions[0]"),
        "{err:?}"
    );
    let unknown_env = pb::GetAppSettingsRequest {
        app_id,
        environment_slug: "staging".into(),
    };
    assert!(matches!(
        svc::get_app_settings(&s, unknown_env).await,
        Err(ApiError::NotFound(_))
    ));
    Ok(())
}
