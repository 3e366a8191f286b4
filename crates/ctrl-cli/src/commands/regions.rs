//! `ctrl regions list` and `ctrl regions agents add|list|revoke`: where
//! deployments run, and the credentials of the agents that run them.

use anyhow::{Result, anyhow};
use ctrl_proto::ctrl::v1 as pb;

use super::Ctx;
use crate::args::{AgentKind, AgentsCommand, RegionsCommand};
use crate::output::{self, Table, ago};

/// `ctrl regions …`
pub(super) async fn run(ctx: &Ctx, cmd: RegionsCommand) -> Result<()> {
    match cmd {
        RegionsCommand::List => list(ctx).await,
        RegionsCommand::Agents(cmd) => agents(ctx, cmd).await,
    }
}

async fn list(ctx: &Ctx) -> Result<()> {
    let api = &ctx.api;
    let regions = api
        .call(
            "listing regions",
            api.regions()
                .list_regions(api.request(pb::ListRegionsRequest {})),
        )
        .await?
        .regions;
    if ctx.json() {
        return output::json(&regions);
    }
    let mut table = Table::new(&["REGION", "ID", "SCHEDULING", "LAST HEARTBEAT"]);
    for r in regions {
        table.row(vec![
            format!("{}/{}", r.platform, r.name),
            r.id,
            if r.can_schedule { "on" } else { "off" }.to_owned(),
            if r.last_heartbeat_at > 0 {
                ago(r.last_heartbeat_at)
            } else {
                "never".to_owned()
            },
        ]);
    }
    table.print(
        "no regions yet: a region appears with its agent's first heartbeat \
         (issue the agent a credential with `ctrl regions agents add`)",
    )
}

fn kind_name(kind: i32) -> &'static str {
    match pb::AgentKind::try_from(kind) {
        Ok(pb::AgentKind::Krane) => "krane",
        Ok(pb::AgentKind::Frontline) => "frontline",
        _ => "unknown",
    }
}

fn binding(c: &pb::AgentCredential) -> String {
    if c.cell_id.is_empty() {
        format!("{}/{}", c.platform, c.region)
    } else {
        format!("{}/{}/{}", c.platform, c.region, c.cell_id)
    }
}

async fn agents(ctx: &Ctx, cmd: AgentsCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        AgentsCommand::Add {
            kind,
            platform,
            region,
            cell,
            name,
        } => {
            let (pb_kind, word) = match kind {
                AgentKind::Krane => (pb::AgentKind::Krane, "krane"),
                AgentKind::Frontline => (pb::AgentKind::Frontline, "frontline"),
            };
            let cell = cell.unwrap_or_default();
            let name = name.unwrap_or_else(|| {
                if cell.is_empty() {
                    format!("{word} {platform}/{region}")
                } else {
                    format!("{word} {platform}/{region}/{cell}")
                }
            });
            let req = api.request(pb::CreateAgentCredentialRequest {
                kind: pb_kind.into(),
                platform,
                region,
                cell_id: cell,
                name,
            });
            let created = api
                .call(
                    "issuing an agent credential",
                    api.regions().create_agent_credential(req),
                )
                .await?;
            let c = created
                .credential
                .as_ref()
                .ok_or_else(|| anyhow!("the API returned no credential"))?;
            if ctx.json() {
                return output::json(&created);
            }
            eprintln!(
                "issued {} for {word} {} — the token is shown only now; set it as the agent's \
                 [control] token (revoke with `ctrl regions agents revoke {}`):",
                c.id,
                binding(c),
                c.id
            );
            println!("{}", created.token);
            Ok(())
        }
        AgentsCommand::List { region, all } => {
            let (platform, region) = match region.as_deref() {
                None => (String::new(), String::new()),
                Some(r) => {
                    let (p, n) = r.split_once('/').ok_or_else(|| {
                        anyhow!("--region: {r:?} must be platform/region, e.g. aws/us-east-1")
                    })?;
                    (p.to_owned(), n.to_owned())
                }
            };
            let req = api.request(pb::ListAgentCredentialsRequest {
                platform,
                region,
                include_revoked: all,
            });
            let credentials = api
                .call(
                    "listing agent credentials",
                    api.regions().list_agent_credentials(req),
                )
                .await?
                .credentials;
            if ctx.json() {
                return output::json(&credentials);
            }
            let mut table = Table::new(&[
                "ID",
                "AGENT",
                "BOUND TO",
                "NAME",
                "TOKEN",
                "CREATED",
                "LAST USED",
                "STATE",
            ]);
            for c in credentials {
                table.row(vec![
                    c.id.clone(),
                    kind_name(c.kind).to_owned(),
                    binding(&c),
                    c.name.clone(),
                    format!("…{}", c.token_hint),
                    ago(c.created_at),
                    if c.last_used_at > 0 {
                        ago(c.last_used_at)
                    } else {
                        "never".to_owned()
                    },
                    if c.revoked_at > 0 {
                        format!("revoked {}", ago(c.revoked_at))
                    } else {
                        "active".to_owned()
                    },
                ]);
            }
            table.print(
                "no agent credentials; issue one with \
                 `ctrl regions agents add --kind krane --platform <p> --region <r> --cell <c>`",
            )
        }
        AgentsCommand::Revoke { credential } => {
            let req = api.request(pb::RevokeAgentCredentialRequest {
                credential_id: credential.clone(),
            });
            let revoked = api
                .call(
                    &format!("revoking {credential}"),
                    api.regions().revoke_agent_credential(req),
                )
                .await?
                .credential
                .ok_or_else(|| anyhow!("the API returned no credential"))?;
            if ctx.json() {
                return output::json(&revoked);
            }
            ctx.done(&format!(
                "revoked {} ({} {}); its agent's calls are refused and its streams end",
                revoked.id,
                kind_name(revoked.kind),
                binding(&revoked)
            ))
        }
    }
}
