//! Agent credentials: who may call the agent services, and as whom.
//!
//! Each regional agent has its own bearer token, bound to what it serves: a
//! krane credential to one cluster (platform, region, cell), a frontline
//! credential to one region. Tokens are issued by operators
//! (`RegionService.CreateAgentCredential`, `ctrl regions agents add`) or
//! registered from a deployment's own secret (`ctrl-api agents ensure`), and
//! are stored only as SHA-256 digests. A request names its cluster or
//! region, and the name must be the credential's: an agent can only
//! heartbeat, watch, sync and report as itself. API tokens are not agent
//! credentials, and agent credentials open no API service but the agents'.
//!
//! Why bearer tokens rather than mTLS with a ctrl CA: agents sit behind
//! customers' load balancers and proxies, which often end TLS; a bearer
//! token survives them, rotates without a CA, and is revoked by one row.

// Checks answer with connectrpc-axum's wire error, as the handlers do.
#![allow(clippy::result_large_err)]

use axum::http::HeaderMap;
use connectrpc_axum::ConnectError;
use ctrl_core::id::{IdKind, generate};
use ctrl_db::agent::{AgentCredential, NewAgentCredential};
pub use ctrl_db::types::AgentKind;
use rand::Rng;
use sha2::{Digest, Sha256};
use sqlx::MySqlPool;

/// Every issued token starts with this (secret scanners can find leaks).
pub const TOKEN_PREFIX: &str = "ctrl_agent_";

/// Shortest token `ensure` registers (issued tokens are longer).
pub const MIN_TOKEN_LEN: usize = 32;

/// The authenticated caller of an agent service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// `agt_…`
    pub credential_id: String,
    /// What it is.
    pub kind: AgentKind,
    /// Platform of its region.
    pub platform: String,
    /// Its region.
    pub region: String,
    /// Its cell (krane); empty for frontline.
    pub cell_id: String,
}

impl Agent {
    /// The credential's binding, as `platform/region[/cell]`.
    pub fn binding(&self) -> String {
        if self.cell_id.is_empty() {
            format!("{}/{}", self.platform, self.region)
        } else {
            format!("{}/{}/{}", self.platform, self.region, self.cell_id)
        }
    }

    /// `permission_denied` unless the request's cluster is this agent's.
    pub fn check_cluster(
        &self,
        platform: &str,
        region: &str,
        cell_id: &str,
    ) -> Result<(), ConnectError> {
        if (platform, region, cell_id)
            == (
                self.platform.as_str(),
                self.region.as_str(),
                self.cell_id.as_str(),
            )
        {
            Ok(())
        } else {
            Err(self.denied(&format!("{platform}/{region}/{cell_id}")))
        }
    }

    /// `permission_denied` unless the request's region is this agent's.
    pub fn check_region(&self, platform: &str, region: &str) -> Result<(), ConnectError> {
        if (platform, region) == (self.platform.as_str(), self.region.as_str()) {
            Ok(())
        } else {
            Err(self.denied(&format!("{platform}/{region}")))
        }
    }

    /// `permission_denied` for a log request filed for another cluster.
    pub fn denied_request(&self, request_id: &str) -> ConnectError {
        ConnectError::new_permission_denied(format!(
            "log request {request_id} is not for {}: credential {} cannot answer it",
            self.binding(),
            self.credential_id
        ))
    }

    fn denied(&self, requested: &str) -> ConnectError {
        ConnectError::new_permission_denied(format!(
            "credential {} is bound to {}; it cannot act for {requested}",
            self.credential_id,
            self.binding()
        ))
    }
}

/// What a credential is bound to, and its label.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The agent.
    pub kind: AgentKind,
    /// Platform of the region.
    pub platform: &'a str,
    /// The region.
    pub region: &'a str,
    /// krane's cell; must be empty for frontline.
    pub cell_id: &'a str,
    /// The operator's label.
    pub name: &'a str,
}

/// Input that cannot make a credential, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

impl<'a> Binding<'a> {
    /// A krane's binding: one cluster.
    pub fn krane(platform: &'a str, region: &'a str, cell_id: &'a str, name: &'a str) -> Self {
        Self {
            kind: AgentKind::Krane,
            platform,
            region,
            cell_id,
            name,
        }
    }

    /// A frontline's binding: one region.
    pub fn frontline(platform: &'a str, region: &'a str, name: &'a str) -> Self {
        Self {
            kind: AgentKind::Frontline,
            platform,
            region,
            cell_id: "",
            name,
        }
    }
}

impl Binding<'_> {
    /// Checks names and the kind's rules; the first problem is named.
    pub fn validate(&self) -> Result<(), Invalid> {
        let label = |field: &'static str, value: &str| {
            if ctrl_core::names::is_dns_label(value) {
                Ok(())
            } else {
                Err(Invalid {
                    field,
                    message: ctrl_core::names::not_a_dns_label(value),
                })
            }
        };
        label("platform", self.platform)?;
        label("region", self.region)?;
        match self.kind {
            AgentKind::Krane => label("cell_id", self.cell_id)?,
            AgentKind::Frontline if !self.cell_id.is_empty() => {
                return Err(Invalid {
                    field: "cell_id",
                    message:
                        "a frontline credential is bound to a region, not a cell: leave it empty"
                            .to_owned(),
                });
            }
            AgentKind::Frontline => {}
        }
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 128 || name.chars().any(char::is_control) {
            return Err(Invalid {
                field: "name",
                message: "must be 1-128 printable characters".to_owned(),
            });
        }
        Ok(())
    }
}

/// A newly issued credential and its token (shown once, never stored).
pub struct Issued {
    /// The stored row.
    pub credential: AgentCredential,
    /// The bearer token.
    pub token: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("credential", &self.credential)
            .field("token", &"<redacted>")
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hint(token: &str) -> &str {
    token.get(token.len().saturating_sub(4)..).unwrap_or("")
}

/// Issues a credential with a fresh random token (256 bits).
pub async fn issue(db: &MySqlPool, binding: &Binding<'_>, now: i64) -> Result<Issued, IssueError> {
    binding.validate()?;
    let (id, token) = {
        let mut rng = rand::rng();
        let secret: [u8; 32] = rng.random();
        (
            generate(IdKind::AgentCredential, &mut rng),
            format!("{TOKEN_PREFIX}{}", hex::encode(secret)),
        )
    };
    let credential = store(db, binding, &id, &token, now).await?;
    Ok(Issued { credential, token })
}

/// Registers a token the operator generated (a deployment's own secret,
/// e.g. a Kubernetes Secret), once: an active credential with this token
/// and the same binding is returned as it is; one bound elsewhere is an
/// error.
pub async fn ensure(
    db: &MySqlPool,
    binding: &Binding<'_>,
    token: &str,
    now: i64,
) -> Result<AgentCredential, IssueError> {
    binding.validate()?;
    if token.len() < MIN_TOKEN_LEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid {
            field: "token",
            message: format!("must be at least {MIN_TOKEN_LEN} characters, without spaces"),
        }
        .into());
    }
    if let Some(existing) = ctrl_db::agent::find_active_by_digest(db, &digest(token)).await? {
        let same = existing.kind == binding.kind
            && existing.platform == binding.platform
            && existing.region == binding.region
            && existing.cell_id == binding.cell_id;
        return if same {
            Ok(existing)
        } else {
            Err(Invalid {
                field: "token",
                message: format!(
                    "already registered as credential {} with another binding",
                    existing.id
                ),
            }
            .into())
        };
    }
    let id = generate(IdKind::AgentCredential, &mut rand::rng());
    store(db, binding, &id, token, now).await
}

async fn store(
    db: &MySqlPool,
    binding: &Binding<'_>,
    id: &str,
    token: &str,
    now: i64,
) -> Result<AgentCredential, IssueError> {
    ctrl_db::agent::insert(
        db,
        &NewAgentCredential {
            id,
            kind: binding.kind,
            platform: binding.platform,
            region: binding.region,
            cell_id: binding.cell_id,
            name: binding.name.trim(),
            token_digest: &digest(token),
            token_hint: hint(token),
        },
        now,
    )
    .await?;
    Ok(AgentCredential {
        id: id.to_owned(),
        kind: binding.kind,
        platform: binding.platform.to_owned(),
        region: binding.region.to_owned(),
        cell_id: binding.cell_id.to_owned(),
        name: binding.name.trim().to_owned(),
        token_hint: hint(token).to_owned(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    })
}

/// Why a credential was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Bad input.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] ctrl_db::Error),
}

/// The agent a request's `Authorization: Bearer` credential belongs to, if
/// it is an active credential of `kind`: `unauthenticated` without one,
/// `permission_denied` for another kind's (a frontline credential on
/// ClusterService), `unavailable` when the database cannot say.
pub async fn authenticate(
    db: &MySqlPool,
    headers: &HeaderMap,
    kind: AgentKind,
) -> Result<Agent, ConnectError> {
    let token = ctrl_runtime::auth::bearer_token(headers).ok_or_else(|| {
        ConnectError::new_unauthenticated(format!(
            "missing agent credential (Authorization: Bearer <{} credential>)",
            kind.as_str()
        ))
    })?;
    let found = ctrl_db::agent::find_active_by_digest(db, &digest(token))
        .await
        .map_err(crate::service::db_error)?
        .ok_or_else(|| ConnectError::new_unauthenticated("invalid or revoked agent credential"))?;
    if found.kind != kind {
        return Err(ConnectError::new_permission_denied(format!(
            "credential {} belongs to {}; this service takes a {} credential",
            found.id,
            found.kind.as_str(),
            kind.as_str()
        )));
    }
    Ok(Agent {
        credential_id: found.id,
        kind: found.kind,
        platform: found.platform,
        region: found.region,
        cell_id: found.cell_id,
    })
}

/// Whether a stream's credential still holds (revoked ends its streams at
/// their next keepalive); a database failure keeps the stream.
pub(crate) async fn still_valid(db: &MySqlPool, agent: &Agent) -> bool {
    match ctrl_db::agent::is_active(db, &agent.credential_id).await {
        Ok(active) => active,
        Err(e) => {
            tracing::debug!(error = %e, "could not re-check an agent credential");
            true
        }
    }
}

/// Records a use (heartbeats and stream starts; at most a write a minute).
pub(crate) async fn touch(db: &MySqlPool, agent: &Agent, now: i64) {
    if let Err(e) = ctrl_db::agent::touch(db, &agent.credential_id, now).await {
        tracing::debug!(error = %e, "could not record an agent credential's use");
    }
}
