//! Turning what people type (slugs, `project/app`, ids) into API objects.
//! Ids are used as they are; slugs are looked up in the workspace, which
//! may be left out when there is only one.

use anyhow::{Result, anyhow, bail};
use ctrl_proto::ctrl::v1 as pb;

use crate::api::Api;

/// The largest page the API serves.
const PAGE: i32 = 200;

/// Every item of a paged list: `fetch` gets one page for a page token and
/// returns its items and paging answer.
async fn all_pages<T, Fut>(mut fetch: impl FnMut(Option<pb::PageRequest>) -> Fut) -> Result<Vec<T>>
where
    Fut: Future<Output = Result<(Vec<T>, Option<pb::PageResponse>)>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (items, page) = fetch(Some(pb::PageRequest {
            page_size: PAGE,
            page_token: token,
        }))
        .await?;
        out.extend(items);
        match page.map(|p| p.next_page_token).filter(|t| !t.is_empty()) {
            Some(next) => token = next,
            None => return Ok(out),
        }
    }
}

/// Every workspace.
pub async fn all_workspaces(api: &Api) -> Result<Vec<pb::Workspace>> {
    all_pages(|page| async move {
        let req = api.request(pb::ListWorkspacesRequest { page });
        let res = api
            .call("listing workspaces", api.workspaces().list_workspaces(req))
            .await?;
        Ok((res.workspaces, res.page))
    })
    .await
}

/// Every project of a workspace.
pub async fn all_projects(api: &Api, workspace_id: &str) -> Result<Vec<pb::Project>> {
    all_pages(|page| async move {
        let req = api.request(pb::ListProjectsRequest {
            workspace_id: workspace_id.to_owned(),
            page,
        });
        let res = api
            .call("listing projects", api.projects().list_projects(req))
            .await?;
        Ok((res.projects, res.page))
    })
    .await
}

/// Every app of a project.
pub async fn all_apps(api: &Api, project_id: &str) -> Result<Vec<pb::App>> {
    all_pages(|page| async move {
        let req = api.request(pb::ListAppsRequest {
            project_id: project_id.to_owned(),
            page,
        });
        let res = api.call("listing apps", api.apps().list_apps(req)).await?;
        Ok((res.apps, res.page))
    })
    .await
}

/// How a command names an app back to the user: as they typed it
/// (`project/app` or a slug), or its slug when they gave an id.
pub fn app_label(named: &str, app: &pb::App) -> String {
    if named.starts_with("app_") {
        app.slug.clone()
    } else {
        named.to_owned()
    }
}

/// The workspace named by `--workspace`, or the only one there is.
pub async fn workspace(api: &Api, named: Option<&str>) -> Result<pb::Workspace> {
    if let Some(id) = named.filter(|n| n.starts_with("ws_")) {
        let req = api.request(pb::GetWorkspaceRequest {
            workspace_id: id.to_owned(),
        });
        let res = api
            .call(
                &format!("getting workspace {id}"),
                api.workspaces().get_workspace(req),
            )
            .await?;
        return res
            .workspace
            .ok_or_else(|| anyhow!("the API returned no workspace"));
    }
    let all = all_workspaces(api).await?;
    match named {
        Some(slug) => all.into_iter().find(|w| w.slug == slug).ok_or_else(|| {
            anyhow!("workspace {slug:?} not found (`ctrl workspaces list` shows them)")
        }),
        None => match <[pb::Workspace; 1]>::try_from(all) {
            Ok([only]) => Ok(only),
            Err(all) if all.is_empty() => {
                bail!("there is no workspace yet; create one with `ctrl workspaces create <slug>`")
            }
            Err(all) => bail!(
                "there are several workspaces ({}); choose one with --workspace or CTRL_WORKSPACE",
                all.iter()
                    .map(|w| w.slug.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// A project by id, or by slug in the workspace.
pub async fn project(api: &Api, workspace: Option<&str>, named: &str) -> Result<pb::Project> {
    if named.starts_with("proj_") {
        let req = api.request(pb::GetProjectRequest {
            project_id: named.to_owned(),
        });
        let res = api
            .call(
                &format!("getting project {named}"),
                api.projects().get_project(req),
            )
            .await?;
        return res
            .project
            .ok_or_else(|| anyhow!("the API returned no project"));
    }
    let ws = self::workspace(api, workspace).await?;
    all_projects(api, &ws.id)
        .await?
        .into_iter()
        .find(|p| p.slug == named)
        .ok_or_else(|| {
            anyhow!(
                "project {named:?} not found in workspace {} (`ctrl projects list` shows them)",
                ws.slug
            )
        })
}

/// An app by id, `project/app`, or a slug unique in the workspace.
pub async fn app(api: &Api, workspace: Option<&str>, named: &str) -> Result<pb::App> {
    if named.starts_with("app_") {
        let req = api.request(pb::GetAppRequest {
            app_id: named.to_owned(),
        });
        let res = api
            .call(&format!("getting app {named}"), api.apps().get_app(req))
            .await?;
        return res.app.ok_or_else(|| anyhow!("the API returned no app"));
    }
    if let Some((project_ref, slug)) = named.split_once('/') {
        let project = self::project(api, workspace, project_ref).await?;
        return all_apps(api, &project.id)
            .await?
            .into_iter()
            .find(|a| a.slug == slug)
            .ok_or_else(|| {
                anyhow!(
                    "app {slug:?} not found in project {} (`ctrl apps list --project {}` shows them)",
                    project.slug,
                    project.slug
                )
            });
    }
    let ws = self::workspace(api, workspace).await?;
    let mut found = Vec::new();
    for project in all_projects(api, &ws.id).await? {
        for app in all_apps(api, &project.id).await? {
            if app.slug == named {
                found.push((project.slug.clone(), app));
            }
        }
    }
    match <[(String, pb::App); 1]>::try_from(found) {
        Ok([(_, app)]) => Ok(app),
        Err(found) if found.is_empty() => bail!(
            "app {named:?} not found in workspace {} (`ctrl apps list` shows them)",
            ws.slug
        ),
        Err(found) => bail!(
            "several projects have an app {named:?}; name one as {}",
            found
                .iter()
                .map(|(p, a)| format!("{p}/{}", a.slug))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    }
}

/// An app's environments.
pub async fn environments(api: &Api, app_id: &str) -> Result<Vec<pb::Environment>> {
    let req = api.request(pb::ListEnvironmentsRequest {
        app_id: app_id.to_owned(),
    });
    Ok(api
        .call(
            "listing environments",
            api.environments().list_environments(req),
        )
        .await?
        .environments)
}

/// One of an app's environments, by slug or id.
pub async fn environment(api: &Api, app: &pb::App, named: &str) -> Result<pb::Environment> {
    environments(api, &app.id)
        .await?
        .into_iter()
        .find(|e| e.slug == named || e.id == named)
        .ok_or_else(|| {
            anyhow!(
                "app {} has no environment {named:?} (`ctrl envs list --app {}` shows them)",
                app.slug,
                app.id
            )
        })
}

/// One deployment with its steps, hostnames and instances.
pub async fn deployment(api: &Api, id: &str) -> Result<pb::Deployment> {
    let req = api.request(pb::GetDeploymentRequest {
        deployment_id: id.to_owned(),
    });
    api.call(
        &format!("getting deployment {id}"),
        api.deployments().get_deployment(req),
    )
    .await?
    .deployment
    .ok_or_else(|| anyhow!("the API returned no deployment"))
}
