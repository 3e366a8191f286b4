//! `ctrl repos connect|list|disconnect`: apps connected to GitHub
//! repositories through the GitHub App. Pushes to the app's default branch
//! then deploy production; other branches and pull requests deploy previews.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use ctrl_proto::ctrl::v1 as pb;

use super::Ctx;
use crate::args::ReposCommand;
use crate::output::{self, Table, ago};
use crate::resolve;

/// `ctrl repos …`
pub(super) async fn run(ctx: &Ctx, cmd: ReposCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        ReposCommand::Connect {
            app,
            repo,
            installation,
        } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let label = resolve::app_label(&app.app, &a);
            let req = api.request(pb::ConnectRepositoryRequest {
                app_id: a.id.clone(),
                repository: repo.clone(),
                installation_id: installation,
            });
            let c = api
                .call(
                    &format!("connecting {label} to {repo}"),
                    api.repositories().connect_repository(req),
                )
                .await?
                .connection
                .ok_or_else(|| anyhow!("the API returned no connection"))?;
            if ctx.json() {
                return output::json(&c);
            }
            println!(
                "connected {label} to {} (installation {}): pushes to {} deploy production, \
                 other branches and pull requests deploy previews",
                c.repository, c.installation_id, a.default_branch
            );
            Ok(())
        }
        ReposCommand::List { app } => {
            let ws = ctx.workspace().await?;
            let app = match app {
                Some(named) => Some(resolve::app(api, Some(&ws.id), &named).await?),
                None => None,
            };
            let req = api.request(pb::ListRepositoryConnectionsRequest {
                workspace_id: ws.id.clone(),
                app_id: app.as_ref().map(|a| a.id.clone()).unwrap_or_default(),
            });
            let connections = api
                .call(
                    "listing connected repositories",
                    api.repositories().list_repository_connections(req),
                )
                .await?
                .connections;
            if ctx.json() {
                return output::json(&connections);
            }
            let names = if connections.is_empty() {
                HashMap::new()
            } else {
                app_names(ctx, &ws.id).await?
            };
            let mut table = Table::new(&["APP", "REPOSITORY", "INSTALLATION", "CONNECTED"]);
            for c in connections {
                table.row(vec![
                    names.get(&c.app_id).cloned().unwrap_or(c.app_id),
                    c.repository,
                    c.installation_id.to_string(),
                    ago(c.created_at),
                ]);
            }
            let flag = app.map_or_else(|| "<app>".to_owned(), |a| a.slug);
            table.print(&format!(
                "no connected repositories; connect one with \
                 `ctrl repos connect --app {flag} --repo <owner/repo> --installation <id>`"
            ))
        }
        ReposCommand::Disconnect { app } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let label = resolve::app_label(&app.app, &a);
            let req = api.request(pb::DisconnectRepositoryRequest {
                app_id: a.id.clone(),
            });
            let disconnected = api
                .call(
                    &format!("disconnecting {label}"),
                    api.repositories().disconnect_repository(req),
                )
                .await?
                .disconnected;
            ctx.done(&if disconnected {
                format!("disconnected {label} from its repository; pushes no longer deploy it")
            } else {
                format!("{label} was not connected to a repository")
            })
        }
    }
}

/// `project/app` of every app of the workspace, by id.
async fn app_names(ctx: &Ctx, workspace_id: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for p in resolve::all_projects(&ctx.api, workspace_id).await? {
        for a in resolve::all_apps(&ctx.api, &p.id).await? {
            out.insert(a.id, format!("{}/{}", p.slug, a.slug));
        }
    }
    Ok(out)
}
