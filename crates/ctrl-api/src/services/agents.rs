//! RegionService's agent credentials: issue, list, revoke. Issuing and
//! checking live in `ctrl_cluster_sync::agents` (the agent services'
//! side); this is the operator's door, behind API tokens.

use ctrl_cluster_sync::agents::{self, AgentKind, Binding};
use ctrl_core::id::IdKind;
use ctrl_db::agent::AgentCredential;
use ctrl_proto::ctrl::v1 as pb;

use crate::error::ApiError;
use crate::state::AppState;
use crate::validate;

fn credential(c: AgentCredential) -> pb::AgentCredential {
    pb::AgentCredential {
        id: c.id,
        kind: match c.kind {
            AgentKind::Krane => pb::AgentKind::Krane,
            AgentKind::Frontline => pb::AgentKind::Frontline,
        }
        .into(),
        platform: c.platform,
        region: c.region,
        cell_id: c.cell_id,
        name: c.name,
        token_hint: c.token_hint,
        created_at: c.created_at,
        last_used_at: c.last_used_at.unwrap_or(0),
        revoked_at: c.revoked_at.unwrap_or(0),
    }
}

/// RegionService.CreateAgentCredential
pub async fn create_agent_credential(
    s: &AppState,
    req: pb::CreateAgentCredentialRequest,
) -> Result<pb::CreateAgentCredentialResponse, ApiError> {
    let kind = match req.kind() {
        pb::AgentKind::Krane => AgentKind::Krane,
        pb::AgentKind::Frontline => AgentKind::Frontline,
        pb::AgentKind::Unspecified => {
            return Err(ApiError::invalid(
                "kind",
                "must be AGENT_KIND_KRANE or AGENT_KIND_FRONTLINE",
            ));
        }
    };
    let issued = agents::issue(
        s.db(),
        &Binding {
            kind,
            platform: &req.platform,
            region: &req.region,
            cell_id: &req.cell_id,
            name: &req.name,
        },
        s.now_ms(),
    )
    .await?;
    tracing::info!(
        credential = %issued.credential.id,
        kind = kind.as_str(),
        platform = %req.platform,
        region = %req.region,
        cell = %req.cell_id,
        "agent credential issued"
    );
    Ok(pb::CreateAgentCredentialResponse {
        credential: Some(credential(issued.credential)),
        token: issued.token,
    })
}

/// RegionService.ListAgentCredentials
pub async fn list_agent_credentials(
    s: &AppState,
    req: pb::ListAgentCredentialsRequest,
) -> Result<pb::ListAgentCredentialsResponse, ApiError> {
    let region = match (req.platform.as_str(), req.region.as_str()) {
        ("", "") => None,
        ("", _) | (_, "") => {
            return Err(ApiError::invalid(
                "region",
                "give both platform and region, or neither",
            ));
        }
        (platform, region) => Some((platform, region)),
    };
    let rows = ctrl_db::agent::list(s.db(), region).await?;
    Ok(pb::ListAgentCredentialsResponse {
        credentials: rows
            .into_iter()
            .filter(|c| req.include_revoked || c.revoked_at.is_none())
            .map(credential)
            .collect(),
    })
}

/// RegionService.RevokeAgentCredential
pub async fn revoke_agent_credential(
    s: &AppState,
    req: pb::RevokeAgentCredentialRequest,
) -> Result<pb::RevokeAgentCredentialResponse, ApiError> {
    validate::id("credential_id", IdKind::AgentCredential, &req.credential_id)?;
    let mut conn = s.db().acquire().await.map_err(ctrl_db::Error::from)?;
    let revoked = ctrl_db::agent::revoke(&mut conn, &req.credential_id, s.now_ms()).await?;
    tracing::info!(credential = %revoked.id, "agent credential revoked");
    Ok(pb::RevokeAgentCredentialResponse {
        credential: Some(credential(revoked)),
    })
}
