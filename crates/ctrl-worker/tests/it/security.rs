//! Restate's side of the trust boundaries, attacked from outside: the
//! worker's own port takes only requests the Restate server signed, the
//! ingress reaches only the handlers ctrl-api and cluster-sync call, and
//! those check the user's rules again themselves.

use anyhow::Result;
use base64::Engine as _;
use ctrl_core::gate::GateError;
use ctrl_core::status::{DeploymentStatus, DesiredState};
use ctrl_db::{deployment, tenancy};
use serde_json::json;

use crate::harness::Harness;

/// A request-identity JWT for `path`, as Restate makes one, signed by a key
/// the worker was not given.
fn forged_jwt(path: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let header = b64.encode(json!({ "typ": "JWT", "alg": "EdDSA" }).to_string());
    let claims =
        b64.encode(json!({ "aud": path, "iat": now, "nbf": now - 1, "exp": now + 60 }).to_string());
    let rng = ring::rand::SystemRandom::new();
    let der = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("a key");
    let key = ring::signature::Ed25519KeyPair::from_pkcs8(der.as_ref()).expect("the key");
    let signed = format!("{header}.{claims}");
    let signature = b64.encode(key.sign(signed.as_bytes()).as_ref());
    format!("{signed}.{signature}")
}

#[tokio::test]
async fn only_the_restate_server_can_invoke_the_worker() -> Result<()> {
    let h = Harness::start().await?;
    let d = h.ready_deployment(&h.preview).await?;
    // The worker speaks the Restate protocol over h2c.
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let path = format!("/invoke/Deployment/{d}/Stop");
    // Unsigned, and signed with another key: 401, nothing runs.
    for jwt in [None, Some(forged_jwt(&path))] {
        let mut req = client
            .post(format!("{}{path}", h.worker_url))
            .header("content-type", "application/vnd.restate.invocation.v5")
            .body(Vec::new());
        if let Some(jwt) = &jwt {
            req = req
                .header("x-restate-signature-scheme", "v1")
                .header("x-restate-jwt-v1", jwt);
        }
        let r = req.send().await?;
        assert_eq!(r.status(), 401, "{:?}", r.text().await);
    }
    let discover = client
        .get(format!("{}/discover", h.worker_url))
        .send()
        .await?;
    assert_eq!(discover.status(), 401);
    // Through Restate (signed), the same handler runs.
    let (status, body) = h
        .call(&format!("Deployment/{d}/Stop"), json!({ "actor": "test" }))
        .await?;
    assert_eq!(status, 200, "{body}");
    h.wait_topology(&d, DesiredState::Stopped).await?;
    Ok(())
}

#[tokio::test]
async fn the_ingress_reaches_only_public_handlers_and_they_check_the_rules() -> Result<()> {
    let h = Harness::start().await?;
    let live = h.ready_deployment(&h.production).await?;
    let mut conn = h.db.pool.acquire().await?;
    tenancy::swap_live_deployment(&mut conn, &h.app, &live, false, "test-swap", 3).await?;
    drop(conn);
    let standby = h.ready_deployment(&h.production).await?;

    // Ingress-private: refused by Restate before the worker sees them.
    let stop_now = json!({ "delay_millis": 0, "state": "stopped", "overwrite": true });
    for (path, body) in [
        (
            format!("Deployment/{live}/ScheduleDesiredStateChange"),
            stop_now.clone(),
        ),
        (
            format!("Deployment/{live}/ChangeDesiredState"),
            json!({ "nonce": "x", "state": "stopped" }),
        ),
        (
            format!("Deployment/{live}/ClearScheduledStateChanges"),
            json!(null),
        ),
        (format!("Routing/{}/ReleaseRoutes", h.app), json!({})),
        ("CustomDomain/dom_x/Verify".to_owned(), json!({})),
        ("CertificateRenewal/global/Run".to_owned(), json!(null)),
    ] {
        let (status, body) = h.call(&path, body).await?;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.to_string().contains("not public"), "{path}: {body}");
    }

    // Public handlers refuse what a user may not do, whoever calls them.
    let refused = [
        (
            format!("Deployment/{live}/Stop"),
            json!({ "actor": "intruder" }),
            GateError::ProductionStop.message(),
        ),
        (
            format!("Deployment/{standby}/Stop"),
            json!({ "actor": "intruder" }),
            GateError::ProductionStop.message(),
        ),
        (
            format!("Deploy/{live}/Delete"),
            json!({ "deployment_id": live, "cascade": true }),
            GateError::LiveDelete.message(),
        ),
    ];
    for (path, body, why) in refused {
        let (status, answer) = h.call(&path, body).await?;
        assert!(status >= 400, "{path}: {status} {answer}");
        assert!(answer.to_string().contains(&why), "{path}: {answer}");
    }
    for id in [&live, &standby] {
        let d = deployment::get(&h.db.pool, id).await?;
        assert_eq!(
            (d.status, d.desired_state),
            (DeploymentStatus::Ready, DesiredState::Running),
            "{id} untouched"
        );
    }

    // A stopped production deployment is not woken through the ingress.
    deployment::set_desired_everywhere(
        &mut *h.db.pool.acquire().await?,
        &standby,
        DesiredState::Stopped,
        4,
    )
    .await?;
    let (status, answer) = h
        .call(
            &format!("Deploy/{standby}/Wake"),
            json!({ "deployment_id": standby }),
        )
        .await?;
    assert!(status >= 400, "{status} {answer}");
    assert!(
        answer
            .to_string()
            .contains(&GateError::ProductionWake.message()),
        "{answer}"
    );
    assert_eq!(
        deployment::get(&h.db.pool, &standby).await?.desired_state,
        DesiredState::Stopped
    );
    Ok(())
}

#[tokio::test]
async fn the_restate_api_key_goes_to_the_admin_api_and_never_to_the_log() -> Result<()> {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = axum::Router::new().route(
        "/deployments",
        axum::routing::post({
            let seen = seen.clone();
            move |headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                seen.lock().expect("lock").push(auth);
                axum::http::StatusCode::CREATED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let admin = format!("http://{}", listener.local_addr()?);
    let server =
        tokio::spawn(async move { axum::serve(ctrl_runtime::net::nodelay(listener), app).await });
    ctrl_worker::startup::register(&admin, Some("restate-key-0123"), "http://worker", 1).await?;
    ctrl_worker::startup::register(&admin, None, "http://worker", 1).await?;
    server.abort();
    assert_eq!(
        *seen.lock().expect("lock"),
        ["Bearer restate-key-0123".to_owned(), String::new()]
    );

    let config: ctrl_worker::config::Config = ctrl_runtime::config::parse(
        "[restate]\nadmin_url = \"http://127.0.0.1:9070\"\napi_key = \"${KEY}\"\n\
         [database]\nurl = \"mysql://ctrl@127.0.0.1:3306/ctrl\"\n",
        "worker.toml",
        &std::collections::HashMap::from([("KEY".to_owned(), "restate-key-0123".to_owned())]),
        ctrl_worker::config::ENV_PREFIX,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(config.restate.api_key.get(), Some("restate-key-0123"));
    assert!(!format!("{config:?}").contains("restate-key-0123"));
    Ok(())
}
