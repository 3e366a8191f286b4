use std::sync::Arc;

use anyhow::Result;
use ctrl_provider::docker::DockerConfig;
use ctrl_provider::spec::Resources;
use ctrl_provider::{
    Capabilities, Capability, Error, ExecRequest, NoSecrets, Provider, ProviderInfo, Registry,
    RegistryError, ScaleRequest, has_capability,
};

use crate::support::*;

#[tokio::test]
async fn operations_without_the_capability_are_unsupported_and_change_nothing() -> Result<()> {
    let env = env_with(
        DockerConfig {
            allow_exec: false,
            ..test_config()
        },
        Arc::new(NoSecrets),
    )
    .await?;
    let provider = &env.provider;
    assert!(!has_capability(provider, Capability::Exec));
    assert!(has_capability(provider, Capability::Rolling));
    provider.provision(&web("w", V1)).await?;
    let exec = provider
        .exec(
            "w",
            &ExecRequest {
                command: vec!["true".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            exec,
            Error::Unsupported {
                capability: Capability::Exec,
                ..
            }
        ),
        "{exec}"
    );

    let mut gpu = web("gpu", V1);
    gpu.services[0].resources.gpus = 1;
    let err = provider.provision(&gpu).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                capability: Capability::Gpu,
                ..
            }
        ),
        "{err}"
    );
    assert!(container_names(&env, "gpu").await?.is_empty());

    let err = provider
        .scale(
            "w",
            &ScaleRequest {
                replicas: None,
                resources: Some(Resources {
                    disk_mib: 512,
                    ..Resources::default()
                }),
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("disk-limits"), "{err}");
    assert_eq!(container_names(&env, "w").await?, ["w-web-0-r1"]);
    Ok(())
}

/// A backend that only knows who it is.
#[derive(Debug)]
struct Bare;

impl Provider for Bare {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "bare".into(),
            version: "0".into(),
            region: "nowhere".into(),
            location: None,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
}

#[tokio::test]
async fn default_operations_are_unsupported_and_the_registry_finds_providers() -> Result<()> {
    let bare = Bare;
    let err = bare.rollback("w", "r1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider \"bare\" does not support rollback (capability deploy is missing)"
    );
    assert!(matches!(
        bare.logs("w", &Default::default()).await,
        Err(Error::Unsupported {
            capability: Capability::Logs,
            ..
        })
    ));
    assert!(matches!(
        bare.provision(&web("w", V1)).await,
        Err(Error::Unsupported { .. })
    ));

    let registry = Registry::new();
    assert!(matches!(
        registry.default_provider(),
        Err(RegistryError::NoDefault(_))
    ));
    registry.register("bare", Arc::new(Bare));
    registry.register("other", Arc::new(Bare));
    assert_eq!(registry.default_provider()?.info().name, "bare");
    registry.set_default("other")?;
    assert_eq!(registry.names(), ["bare", "other"]);
    assert!(matches!(registry.get("k8s"), Err(RegistryError::NotFound(name)) if name == "k8s"));
    assert!(registry.set_default("k8s").is_err());
    Ok(())
}
