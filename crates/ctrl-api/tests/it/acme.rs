//! AcmeService for the edge: the key authorization of an open HTTP-01
//! challenge, behind the edge's own tokens (and only those).

use anyhow::Result;
use ctrl_core::id::{IdKind, generate};
use serde_json::{Value, json};

use crate::{EDGE_TOKEN, TOKEN, serve, state};

async fn call(base: &str, path: &str, token: Option<&str>, body: Value) -> Result<(u16, Value)> {
    let mut req = ctrl_testkit::http_client()
        .post(format!("{base}/ctrl.v1.{path}"))
        .header("content-type", "application/json")
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn verify_certificate_answers_open_challenges_to_the_edge_only() -> Result<()> {
    let s = state().await?;
    let mut rng = rand::rng();
    let domain_id = generate(IdKind::CustomDomain, &mut rng);
    let workspace = generate(IdKind::Workspace, &mut rng);
    ctrl_db::custom_domain::insert(
        s.db(),
        &ctrl_db::custom_domain::NewCustomDomain {
            id: &domain_id,
            workspace_id: &workspace,
            project_id: "proj_x",
            app_id: "app_x",
            environment_id: "env_x",
            domain: "shop.example.com",
            verification_token: "txt-token",
            target_cname: "abc.cname.ctrl.test",
        },
        1,
    )
    .await?;
    let token = "Zm9vYmFyLWJhei1xdXV4LTAxMjM0NTY3ODk";
    ctrl_db::certificate::open_http01_challenge(
        s.db(),
        &ctrl_db::certificate::NewHttp01Challenge {
            workspace_id: &workspace,
            domain_id: &domain_id,
            token,
            authorization: "key-authorization.thumbprint",
            expires_at: 10,
        },
        1,
    )
    .await?;
    let base = serve(s).await?;
    let verify = |domain: &str, token: &str| json!({ "domain": domain, "token": token });

    let (status, body) = call(
        &base,
        "AcmeService/VerifyCertificate",
        Some(EDGE_TOKEN),
        verify("Shop.Example.com", token),
    )
    .await?;
    assert_eq!(
        (status, body["authorization"].as_str()),
        (200, Some("key-authorization.thumbprint"))
    );

    let (status, body) = call(
        &base,
        "AcmeService/VerifyCertificate",
        Some(EDGE_TOKEN),
        verify("shop.example.com", "AAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &base,
        "AcmeService/VerifyCertificate",
        Some(EDGE_TOKEN),
        verify("shop.example.com", "../../etc/passwd"),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("token"),
        "{body}"
    );
    let (status, _) = call(
        &base,
        "AcmeService/VerifyCertificate",
        Some(EDGE_TOKEN),
        verify("not a host", token),
    )
    .await?;
    assert_eq!(status, 400);

    // The API's tokens are not the edge's, and the edge's open nothing else.
    let (status, _) = call(
        &base,
        "AcmeService/VerifyCertificate",
        Some(TOKEN),
        verify("shop.example.com", token),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, _) = call(
        &base,
        "AcmeService/VerifyCertificate",
        None,
        verify("shop.example.com", token),
    )
    .await?;
    assert_eq!(status, 401);
    let (status, _) = call(
        &base,
        "WorkspaceService/ListWorkspaces",
        Some(EDGE_TOKEN),
        json!({}),
    )
    .await?;
    assert_eq!(status, 401);
    Ok(())
}
