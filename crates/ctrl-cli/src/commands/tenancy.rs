//! `ctrl workspaces|projects|apps|envs`.

use anyhow::{Result, anyhow};
use ctrl_proto::ctrl::v1 as pb;

use super::Ctx;
use crate::args::{AppCommand, EnvsCommand, ProjectCommand, WorkspaceCommand};
use crate::output::{self, Table, ago, enum_name};
use crate::resolve;

/// `ctrl workspaces …`
pub(super) async fn workspaces(ctx: &Ctx, cmd: WorkspaceCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        WorkspaceCommand::Create { slug, name } => {
            let req = api.request(pb::CreateWorkspaceRequest {
                name: name.unwrap_or_else(|| slug.clone()),
                slug,
                actor: Some(ctx.actor()),
            });
            let ws = api
                .call(
                    "creating the workspace",
                    api.workspaces().create_workspace(req),
                )
                .await?
                .workspace
                .ok_or_else(|| anyhow!("the API returned no workspace"))?;
            ctx.created(&ws, &format!("workspace {} ({})", ws.slug, ws.id))
        }
        WorkspaceCommand::List => {
            let all = resolve::all_workspaces(api).await?;
            if ctx.json() {
                return output::json(&all);
            }
            let mut table = Table::new(&["SLUG", "NAME", "ID", "CREATED"]);
            for w in all {
                table.row(vec![w.slug, w.name, w.id, ago(w.created_at)]);
            }
            table.print("no workspaces; create one with `ctrl workspaces create <slug>`")
        }
        WorkspaceCommand::Get { workspace } => {
            let w = resolve::workspace(api, Some(&workspace)).await?;
            if ctx.json() {
                return output::json(&w);
            }
            output::fields(&[
                ("slug", w.slug),
                ("name", w.name),
                ("id", w.id),
                ("created", ago(w.created_at)),
            ])
        }
        WorkspaceCommand::Delete { workspace, confirm } => {
            let w = resolve::workspace(api, Some(&workspace)).await?;
            output::confirm(
                confirm.yes,
                &format!(
                    "Delete workspace {} with all its projects, apps and deployments?",
                    w.slug
                ),
            )?;
            let req = api.request(pb::DeleteWorkspaceRequest {
                workspace_id: w.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call(
                "deleting the workspace",
                api.workspaces().delete_workspace(req),
            )
            .await?;
            ctx.until_gone(&format!("workspace {}", w.slug), async || {
                api.workspaces()
                    .get_workspace(api.request(pb::GetWorkspaceRequest {
                        workspace_id: w.id.clone(),
                    }))
                    .await
            })
            .await?;
            ctx.done(&format!("deleted workspace {}", w.slug))
        }
    }
}

/// `ctrl projects …`
pub(super) async fn projects(ctx: &Ctx, cmd: ProjectCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        ProjectCommand::Create { slug, name } => {
            let ws = ctx.workspace().await?;
            let req = api.request(pb::CreateProjectRequest {
                workspace_id: ws.id,
                name: name.unwrap_or_else(|| slug.clone()),
                slug,
                actor: Some(ctx.actor()),
            });
            let p = api
                .call("creating the project", api.projects().create_project(req))
                .await?
                .project
                .ok_or_else(|| anyhow!("the API returned no project"))?;
            ctx.created(&p, &format!("project {} ({})", p.slug, p.id))
        }
        ProjectCommand::List => {
            let ws = ctx.workspace().await?;
            let all = resolve::all_projects(api, &ws.id).await?;
            if ctx.json() {
                return output::json(&all);
            }
            let mut table = Table::new(&["SLUG", "NAME", "ID", "CREATED"]);
            for p in all {
                table.row(vec![p.slug, p.name, p.id, ago(p.created_at)]);
            }
            table.print("no projects; create one with `ctrl projects create <slug>`")
        }
        ProjectCommand::Get { project } => {
            let p = resolve::project(api, ctx.workspace_ref(), &project).await?;
            if ctx.json() {
                return output::json(&p);
            }
            output::fields(&[
                ("slug", p.slug),
                ("name", p.name),
                ("id", p.id),
                ("workspace", p.workspace_id),
                ("delete protection", p.delete_protection.to_string()),
                ("created", ago(p.created_at)),
            ])
        }
        ProjectCommand::Delete { project, confirm } => {
            let p = resolve::project(api, ctx.workspace_ref(), &project).await?;
            output::confirm(
                confirm.yes,
                &format!(
                    "Delete project {} with all its apps and deployments?",
                    p.slug
                ),
            )?;
            let req = api.request(pb::DeleteProjectRequest {
                project_id: p.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call("deleting the project", api.projects().delete_project(req))
                .await?;
            ctx.until_gone(&format!("project {}", p.slug), async || {
                api.projects()
                    .get_project(api.request(pb::GetProjectRequest {
                        project_id: p.id.clone(),
                    }))
                    .await
            })
            .await?;
            ctx.done(&format!("deleted project {}", p.slug))
        }
    }
}

/// `ctrl apps …`
pub(super) async fn apps(ctx: &Ctx, cmd: AppCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        AppCommand::Create {
            slug,
            project,
            name,
            default_branch,
        } => {
            let p = resolve::project(api, ctx.workspace_ref(), &project).await?;
            let req = api.request(pb::CreateAppRequest {
                project_id: p.id,
                name: name.unwrap_or_else(|| slug.clone()),
                slug,
                default_branch,
                actor: Some(ctx.actor()),
            });
            let app = api
                .call("creating the app", api.apps().create_app(req))
                .await?
                .app
                .ok_or_else(|| anyhow!("the API returned no app"))?;
            ctx.created(
                &app,
                &format!(
                    "app {}/{} ({}) with environments production and preview",
                    p.slug, app.slug, app.id
                ),
            )
        }
        AppCommand::List { project } => {
            let projects = match project {
                Some(p) => vec![resolve::project(api, ctx.workspace_ref(), &p).await?],
                None => resolve::all_projects(api, &ctx.workspace().await?.id).await?,
            };
            let mut apps = Vec::new();
            for p in &projects {
                for app in resolve::all_apps(api, &p.id).await? {
                    apps.push((p.slug.clone(), app));
                }
            }
            if ctx.json() {
                return output::json(&apps.into_iter().map(|(_, a)| a).collect::<Vec<_>>());
            }
            let mut table = Table::new(&["APP", "NAME", "ID", "LIVE", "CREATED"]);
            for (project, a) in apps {
                let live = match (a.live_deployment_id.as_str(), a.is_rolled_back) {
                    ("", _) => "-".to_owned(),
                    (id, true) => format!("{id} (rolled back)"),
                    (id, false) => id.to_owned(),
                };
                table.row(vec![
                    format!("{project}/{}", a.slug),
                    a.name,
                    a.id,
                    live,
                    ago(a.created_at),
                ]);
            }
            table.print("no apps; create one with `ctrl apps create <slug> --project <project>`")
        }
        AppCommand::Get { app } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app).await?;
            if ctx.json() {
                return output::json(&a);
            }
            output::fields(&[
                ("slug", a.slug),
                ("name", a.name),
                ("id", a.id),
                ("project", a.project_id),
                ("default branch", a.default_branch),
                ("live deployment", or_dash(a.live_deployment_id)),
                ("rolled back", a.is_rolled_back.to_string()),
                ("created", ago(a.created_at)),
            ])
        }
        AppCommand::Delete { app, confirm } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app).await?;
            output::confirm(
                confirm.yes,
                &format!(
                    "Delete app {} with its environments and deployments?",
                    a.slug
                ),
            )?;
            let req = api.request(pb::DeleteAppRequest {
                app_id: a.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call("deleting the app", api.apps().delete_app(req))
                .await?;
            ctx.until_gone(&format!("app {}", a.slug), async || {
                api.apps()
                    .get_app(api.request(pb::GetAppRequest {
                        app_id: a.id.clone(),
                    }))
                    .await
            })
            .await?;
            ctx.done(&format!("deleted app {}", a.slug))
        }
    }
}

/// `ctrl envs …`
pub(super) async fn envs(ctx: &Ctx, cmd: EnvsCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        EnvsCommand::Create {
            slug,
            app,
            description,
        } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let req = api.request(pb::CreateEnvironmentRequest {
                app_id: a.id,
                slug,
                kind: pb::EnvironmentKind::Preview as i32,
                description,
                actor: Some(ctx.actor()),
            });
            let env = api
                .call(
                    "creating the environment",
                    api.environments().create_environment(req),
                )
                .await?
                .environment
                .ok_or_else(|| anyhow!("the API returned no environment"))?;
            ctx.created(&env, &format!("environment {} ({})", env.slug, env.id))
        }
        EnvsCommand::List { app } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let all = resolve::environments(api, &a.id).await?;
            if ctx.json() {
                return output::json(&all);
            }
            let mut table = Table::new(&["SLUG", "KIND", "ID", "DESCRIPTION"]);
            for e in all {
                table.row(vec![e.slug, kind(e.kind), e.id, e.description]);
            }
            table.print("no environments")
        }
        EnvsCommand::Get { env, app } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let e = resolve::environment(api, &a, &env).await?;
            if ctx.json() {
                return output::json(&e);
            }
            output::fields(&[
                ("slug", e.slug),
                ("kind", kind(e.kind)),
                ("id", e.id),
                ("app", e.app_id),
                ("description", or_dash(e.description)),
                ("created", ago(e.created_at)),
            ])
        }
        EnvsCommand::Delete { env, app, confirm } => {
            let a = resolve::app(api, ctx.workspace_ref(), &app.app).await?;
            let e = resolve::environment(api, &a, &env).await?;
            output::confirm(
                confirm.yes,
                &format!(
                    "Delete environment {} of {} with its deployments?",
                    e.slug, a.slug
                ),
            )?;
            let req = api.request(pb::DeleteEnvironmentRequest {
                environment_id: e.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call(
                "deleting the environment",
                api.environments().delete_environment(req),
            )
            .await?;
            ctx.until_gone(&format!("environment {}", e.slug), async || {
                api.environments()
                    .get_environment(api.request(pb::GetEnvironmentRequest {
                        environment_id: e.id.clone(),
                    }))
                    .await
            })
            .await?;
            ctx.done(&format!("deleted environment {}", e.slug))
        }
    }
}

fn kind(value: i32) -> String {
    pb::EnvironmentKind::try_from(value).map_or_else(
        |_| value.to_string(),
        |k| enum_name(k.as_str_name(), "ENVIRONMENT_KIND_"),
    )
}

/// `-` for an empty value.
pub(crate) fn or_dash(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}
