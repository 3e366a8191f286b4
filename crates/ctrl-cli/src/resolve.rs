//! Turning what people type (slugs, `project/app`, ids) into API objects.
//! Ids are used as they are; slugs are looked up in the workspace, which
//! may be left out when there is only one.

use anyhow::{Result, anyhow, bail};
use ctrl_proto::ctrl::v1 as pb;
use futures::future::try_join_all;

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

/// How a command names a custom domain: its id, or its hostname (as ctrl
/// stores it: lowercase, without a trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// `dom_…`.
    Id(String),
    /// `shop.example.com`.
    Host(String),
}

impl DomainRef {
    /// What `named` is: a hostname cannot hold `_`, so `dom_…` without a
    /// dot is an id.
    pub fn parse(named: &str) -> Self {
        let named = named.trim();
        if named.starts_with("dom_") && !named.contains('.') {
            Self::Id(named.to_owned())
        } else {
            Self::Host(named.trim_end_matches('.').to_ascii_lowercase())
        }
    }
}

/// An environment's custom domains, ordered by hostname.
pub async fn custom_domains(api: &Api, environment_id: &str) -> Result<Vec<pb::CustomDomain>> {
    let req = api.request(pb::ListCustomDomainsRequest {
        environment_id: environment_id.to_owned(),
    });
    Ok(api
        .call(
            "listing custom domains",
            api.custom_domains().list_custom_domains(req),
        )
        .await?
        .custom_domains)
}

/// The custom domain `named` (a hostname or a `dom_…` id). A hostname is
/// looked up in the environments named by `app` and `env`: that one
/// environment, every environment of the app, or (no app) every
/// environment of the workspace. A hostname is added at most once per
/// workspace, so a wider search finds the same domain.
pub async fn custom_domain(
    api: &Api,
    workspace: Option<&str>,
    named: &str,
    app: Option<&str>,
    env: Option<&str>,
) -> Result<pb::CustomDomain> {
    let host = match DomainRef::parse(named) {
        DomainRef::Id(id) => {
            let req = api.request(pb::GetCustomDomainRequest {
                domain_id: id.clone(),
            });
            return api
                .call(
                    &format!("getting custom domain {id}"),
                    api.custom_domains().get_custom_domain(req),
                )
                .await?
                .custom_domain
                .ok_or_else(|| anyhow!("the API returned no custom domain"));
        }
        DomainRef::Host(host) => host,
    };
    let (envs, place, flags) = match app {
        Some(app_named) => {
            let app = self::app(api, workspace, app_named).await?;
            let label = app_label(app_named, &app);
            match env {
                Some(env) => {
                    let e = environment(api, &app, env).await?;
                    let place = format!("{label} ({})", e.slug);
                    let flags = format!("--app {label} --env {}", e.slug);
                    (vec![e], place, flags)
                }
                None => (
                    environments(api, &app.id).await?,
                    format!("app {label}"),
                    format!("--app {label} [--env <env>]"),
                ),
            }
        }
        None => {
            let ws = self::workspace(api, workspace).await?;
            let projects = all_projects(api, &ws.id).await?;
            let apps = try_join_all(projects.iter().map(|p| all_apps(api, &p.id))).await?;
            let per_app =
                try_join_all(apps.iter().flatten().map(|a| environments(api, &a.id))).await?;
            (
                per_app.into_iter().flatten().collect(),
                format!("workspace {}", ws.slug),
                "--app <app> [--env <env>]".to_owned(),
            )
        }
    };
    let listed = try_join_all(envs.iter().map(|e| custom_domains(api, &e.id))).await?;
    find_domain(listed.into_iter().flatten(), &host).ok_or_else(|| {
        anyhow!("no custom domain {host:?} in {place} (`ctrl domains list {flags}` shows them)")
    })
}

/// The domain whose hostname is `host` (as [`DomainRef::parse`] gives it).
pub fn find_domain(
    domains: impl IntoIterator<Item = pb::CustomDomain>,
    host: &str,
) -> Option<pb::CustomDomain> {
    domains.into_iter().find(|d| d.domain == host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_is_named_by_id_or_by_hostname() {
        assert_eq!(
            DomainRef::parse("dom_3kTq9x"),
            DomainRef::Id("dom_3kTq9x".into())
        );
        assert_eq!(
            DomainRef::parse(" Shop.Example.COM. "),
            DomainRef::Host("shop.example.com".into())
        );
        // Not an id: a hostname (which the API refuses, naming it).
        assert_eq!(
            DomainRef::parse("dom_x.example.com"),
            DomainRef::Host("dom_x.example.com".into())
        );
        assert_eq!(
            DomainRef::parse("domains.example.com"),
            DomainRef::Host("domains.example.com".into())
        );
    }

    #[test]
    fn a_hostname_finds_its_domain_in_a_listing() {
        let listed = ["api.example.com", "shop.example.com"].map(|host| pb::CustomDomain {
            id: format!("dom_{}", &host[..3]),
            domain: host.into(),
            ..Default::default()
        });
        let DomainRef::Host(host) = DomainRef::parse("SHOP.example.com.") else {
            panic!("a hostname parsed as an id");
        };
        assert_eq!(
            find_domain(listed.clone(), &host).map(|d| d.id),
            Some("dom_sho".to_owned())
        );
        assert_eq!(find_domain(listed, "www.example.com"), None);
    }
}
