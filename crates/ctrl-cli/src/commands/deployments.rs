//! `ctrl deployments list|get|approve|delete`, `rollback`, `promote`, `cancel`, `stop`, `wake`.

use anyhow::{Result, anyhow, bail};
use ctrl_proto::ctrl::v1 as pb;

use super::tenancy::or_dash;
use super::{Ctx, build};
use crate::args::{DeploymentsCommand, RollbackArgs};
use crate::output::{self, Table, ago, duration, status, step_kind};
use crate::resolve;

/// `ctrl deployments …`
pub(super) async fn run(ctx: &Ctx, cmd: DeploymentsCommand) -> Result<()> {
    match cmd {
        DeploymentsCommand::List {
            app,
            env,
            branch,
            status: statuses,
            limit,
        } => {
            let statuses = statuses
                .iter()
                .map(|s| output::parse_status(s).map(|s| s as i32))
                .collect::<Result<Vec<_>>>()?;
            let app = resolve::app(&ctx.api, ctx.workspace_ref(), &app.app).await?;
            let list = list(
                ctx,
                pb::ListDeploymentsRequest {
                    app_id: app.id.clone(),
                    environment_slug: env.unwrap_or_default(),
                    branch: branch.unwrap_or_default(),
                    statuses,
                    page: None,
                },
                limit,
            )
            .await?;
            if ctx.json() {
                return output::json(&list);
            }
            let mut table = Table::new(&["ID", "ENV", "STATUS", "IMAGE", "BRANCH", "CREATED"]);
            for d in list {
                let mut state = status(d.status);
                if d.is_live {
                    state.push_str(" (live)");
                }
                table.row(vec![
                    d.id,
                    d.environment_slug,
                    state,
                    or_dash(d.image),
                    or_dash(d.git.map(|g| g.branch).unwrap_or_default()),
                    ago(d.created_at),
                ]);
            }
            table.print(&format!(
                "no deployments of {} yet; deploy with `ctrl deploy --app {} --image <image>`",
                app.slug, app.id
            ))
        }
        DeploymentsCommand::Delete {
            deployment,
            confirm,
        } => {
            let d = resolve::deployment(&ctx.api, &deployment).await?;
            output::confirm(
                confirm.yes,
                &format!("Delete deployment {} and its URLs?", d.id),
            )?;
            let api = &ctx.api;
            let req = api.request(pb::DeleteDeploymentRequest {
                deployment_id: d.id.clone(),
                actor: Some(ctx.actor()),
            });
            api.call(
                &format!("deleting {}", d.id),
                api.deployments().delete_deployment(req),
            )
            .await?;
            ctx.until_gone(&format!("deployment {}", d.id), async || {
                api.deployments()
                    .get_deployment(api.request(pb::GetDeploymentRequest {
                        deployment_id: d.id.clone(),
                    }))
                    .await
            })
            .await?;
            ctx.done(&format!("deleted deployment {}", d.id))
        }
        DeploymentsCommand::Approve(d) => approve(ctx, &d.deployment).await,
        DeploymentsCommand::Get(d) => {
            let d = resolve::deployment(&ctx.api, &d.deployment).await?;
            if ctx.json() {
                return output::json(&d);
            }
            // Made from source: its build too (a build that cannot be read
            // says why instead; the deployment is shown regardless).
            let build = if d.build_id.is_empty() {
                None
            } else {
                Some(
                    build::get(&ctx.api, &d.id)
                        .await
                        .map_err(|e| format!("{e:#}")),
                )
            };
            print(&d, build, ctx.edge_https_port)
        }
    }
}

/// Up to `limit` deployments, newest first, following pages.
async fn list(
    ctx: &Ctx,
    mut req: pb::ListDeploymentsRequest,
    limit: usize,
) -> Result<Vec<pb::Deployment>> {
    let api = &ctx.api;
    let mut out = Vec::new();
    loop {
        req.page = Some(pb::PageRequest {
            page_size: i32::try_from(limit.saturating_sub(out.len()).clamp(1, 200)).unwrap_or(200),
            page_token: req.page.take().map(|p| p.page_token).unwrap_or_default(),
        });
        let res = api
            .call(
                "listing deployments",
                api.deployments().list_deployments(api.request(req.clone())),
            )
            .await?;
        out.extend(res.deployments);
        let next = res.page.map(|p| p.next_page_token).unwrap_or_default();
        if out.len() >= limit || next.is_empty() {
            out.truncate(limit);
            return Ok(out);
        }
        req.page = Some(pb::PageRequest {
            page_size: 0,
            page_token: next,
        });
    }
}

/// A deployment in full: what, where, its build, steps, URLs and instances.
pub(super) fn print(
    d: &pb::Deployment,
    build: Option<std::result::Result<pb::Build, String>>,
    edge_https_port: Option<u16>,
) -> Result<()> {
    let git = d.git.clone().unwrap_or_default();
    let mut state = status(d.status);
    if d.is_live {
        state.push_str(" (live)");
    }
    let mut fields = vec![
        ("id", d.id.clone()),
        ("status", state),
        ("environment", d.environment_slug.clone()),
        ("image", or_dash(d.image.clone())),
    ];
    if !git.branch.is_empty() || !git.commit_sha.is_empty() {
        fields.push((
            "git",
            format!(
                "{} {}",
                git.branch,
                git.commit_sha.get(..12).unwrap_or(&git.commit_sha)
            ),
        ));
    }
    if git.pr_number > 0 {
        let mut pr = format!("#{}", git.pr_number);
        if !git.fork_repository.is_empty() {
            pr.push_str(&format!(" from {}", git.fork_repository));
        }
        fields.push(("pull request", pr));
    }
    if !d.error_message.is_empty() {
        fields.push(("error", d.error_message.clone()));
    }
    fields.push(("created", ago(d.created_at)));
    output::fields(&fields)?;
    match build {
        Some(Ok(b)) => {
            println!("\nbuild");
            for line in output::field_lines(&build::fields(&b, output::now_ms())) {
                println!("  {line}");
            }
        }
        Some(Err(why)) => println!("\nbuild\n  {} ({why})", d.build_id),
        None => {}
    }
    if !d.steps.is_empty() {
        println!("\nsteps");
        let mut table = Table::new(&["", "STEP", "TOOK", "MESSAGE"]);
        for s in &d.steps {
            let (mark, took) = match pb::DeploymentStepStatus::try_from(s.status) {
                Ok(pb::DeploymentStepStatus::Succeeded) => {
                    ("✓", duration(s.ended_at - s.started_at))
                }
                Ok(pb::DeploymentStepStatus::Failed) => ("✗", duration(s.ended_at - s.started_at)),
                _ => ("…", "running".into()),
            };
            let message = if s.error_message.is_empty() {
                s.message.clone()
            } else {
                s.error_message.clone()
            };
            table.row(vec![mark.into(), step_kind(s.kind), took, message]);
        }
        table.print("")?;
    }
    let urls = urls(d, edge_https_port);
    if !urls.is_empty() {
        println!("\nurls");
        for url in urls {
            println!("  {url}");
        }
    }
    if !d.regions.is_empty() {
        println!("\nregions");
        let mut table = Table::new(&["REGION", "DESIRED", "RUNNING", "INSTANCES"]);
        for r in &d.regions {
            let desired = pb::DesiredState::try_from(r.desired_state).map_or_else(
                |_| "-".into(),
                |s| output::enum_name(s.as_str_name(), "DESIRED_STATE_"),
            );
            let instances = r
                .instances
                .iter()
                .map(|i| format!("{} {}", i.address, instance_status(i.status)))
                .collect::<Vec<_>>()
                .join(", ");
            table.row(vec![
                r.region_name.clone(),
                desired,
                r.running_instances.to_string(),
                or_dash(instances),
            ]);
        }
        table.print("")?;
    }
    Ok(())
}

/// Where a deployment answers: its hostnames (served over HTTPS by the
/// edge, on `edge_https_port` when it is not 443), then each running
/// instance's own address.
pub(super) fn urls(d: &pb::Deployment, edge_https_port: Option<u16>) -> Vec<String> {
    urls_with(d, edge_https_port, &[])
}

/// [`urls`], with the environment's custom domains that serve `d` after
/// its generated hostnames (a custom domain's route is one of the
/// hostnames once it points at `d`; it is listed once, as a custom domain).
pub(super) fn urls_with(
    d: &pb::Deployment,
    edge_https_port: Option<u16>,
    custom_domains: &[String],
) -> Vec<String> {
    let port = edge_https_port
        .filter(|p| *p != 443)
        .map_or(String::new(), |p| format!(":{p}"));
    let mut out: Vec<(String, String)> = d
        .hostnames
        .iter()
        .filter(|h| !custom_domains.contains(&h.fqdn))
        .map(|h| {
            (
                format!("https://{}{port}", h.fqdn),
                "hostname, through the edge".into(),
            )
        })
        .collect();
    out.extend(
        custom_domains
            .iter()
            .map(|host| (format!("https://{host}{port}"), "custom domain".into())),
    );
    for r in &d.regions {
        for i in &r.instances {
            if i.status == pb::InstanceStatus::Running as i32 {
                out.push((
                    format!("http://{}", i.address),
                    format!("instance in {}", r.region_name),
                ));
            }
        }
    }
    let width = out.iter().map(|(url, _)| url.len()).max().unwrap_or(0);
    out.into_iter()
        .map(|(url, what)| format!("{url:<width$}  ({what})"))
        .collect()
}

fn instance_status(value: i32) -> String {
    pb::InstanceStatus::try_from(value).map_or_else(
        |_| value.to_string(),
        |s| output::enum_name(s.as_str_name(), "INSTANCE_STATUS_"),
    )
}

/// `ctrl rollback [deployment] [--app]`
pub(super) async fn rollback(ctx: &Ctx, args: RollbackArgs) -> Result<()> {
    let target = match args.deployment {
        Some(id) => id,
        None => {
            let app = args.app.ok_or_else(|| {
                anyhow!("name the deployment to roll back to, or the app with --app")
            })?;
            previous_production(ctx, &app).await?
        }
    };
    let api = &ctx.api;
    let req = api.request(pb::RollbackRequest {
        target_deployment_id: target.clone(),
        source_deployment_id: String::new(),
        actor: Some(ctx.actor()),
    });
    let previous = api
        .call(
            &format!("rolling back to {target}"),
            api.deployments().rollback(req),
        )
        .await?
        .previous_deployment_id;
    ctx.done(&format!(
        "rolled back: {target} is live (was {}); new production deployments stay off until `ctrl promote`",
        or_dash(previous)
    ))
}

/// The newest still-running ready production deployment older than the live one.
async fn previous_production(ctx: &Ctx, app: &str) -> Result<String> {
    let app = resolve::app(&ctx.api, ctx.workspace_ref(), app).await?;
    if app.live_deployment_id.is_empty() {
        bail!("app {} has no live deployment to roll back from", app.slug);
    }
    let ready = list(
        ctx,
        pb::ListDeploymentsRequest {
            app_id: app.id.clone(),
            environment_slug: "production".into(),
            statuses: vec![pb::DeploymentStatus::Ready as i32],
            ..Default::default()
        },
        200,
    )
    .await?;
    ready
        .iter()
        .skip_while(|d| d.id != app.live_deployment_id)
        .skip(1)
        .find(|d| d.desired_state == pb::DesiredState::Running as i32)
        .map(|d| d.id.clone())
        .ok_or_else(|| {
            anyhow!(
                "app {} has no earlier ready production deployment that still runs",
                app.slug
            )
        })
}

/// `ctrl promote <deployment>`
pub(super) async fn promote(ctx: &Ctx, id: &str) -> Result<()> {
    let api = &ctx.api;
    let req = api.request(pb::PromoteRequest {
        target_deployment_id: id.to_owned(),
        actor: Some(ctx.actor()),
    });
    let previous = api
        .call(&format!("promoting {id}"), api.deployments().promote(req))
        .await?
        .previous_deployment_id;
    ctx.done(&format!(
        "promoted: {id} is live (was {}); new production deployments go live again",
        or_dash(previous)
    ))
}

/// `ctrl deployments approve <deployment>`: starts a deployment that
/// awaits approval; one that does not is left as it is (and said so).
async fn approve(ctx: &Ctx, id: &str) -> Result<()> {
    let api = &ctx.api;
    let req = api.request(pb::ApproveDeploymentRequest {
        deployment_id: id.to_owned(),
        actor: Some(ctx.actor()),
    });
    let after = api
        .call(
            &format!("approving {id}"),
            api.deployments().approve_deployment(req),
        )
        .await?
        .status;
    if after == pb::DeploymentStatus::Pending as i32 {
        ctx.done(&format!(
            "approved {id}: it deploys now; `ctrl deployments get {id}` shows how far it is"
        ))
    } else {
        ctx.done(&format!(
            "{id} does not await approval (it is {}); nothing changed",
            status(after)
        ))
    }
}

/// `ctrl cancel <deployment>`
pub(super) async fn cancel(ctx: &Ctx, id: &str) -> Result<()> {
    let api = &ctx.api;
    let req = api.request(pb::CancelDeploymentRequest {
        deployment_id: id.to_owned(),
        actor: Some(ctx.actor()),
    });
    let after = api
        .call(
            &format!("cancelling {id}"),
            api.deployments().cancel_deployment(req),
        )
        .await?
        .status;
    ctx.done(&format!("{id} is {}", status(after)))
}

/// `ctrl stop <deployment>`
pub(super) async fn stop(ctx: &Ctx, id: &str) -> Result<()> {
    let api = &ctx.api;
    let req = api.request(pb::StopDeploymentRequest {
        deployment_id: id.to_owned(),
        actor: Some(ctx.actor()),
    });
    api.call(
        &format!("stopping {id}"),
        api.deployments().stop_deployment(req),
    )
    .await?;
    ctx.done(&format!(
        "stopping {id}: its instances go away; `ctrl wake {id}` starts them again"
    ))
}

/// `ctrl wake <deployment>`: starts its instances again and follows the
/// wake like a deploy, until the deployment is ready (or stopped again,
/// with the reason).
pub(super) async fn wake(ctx: &Ctx, id: &str) -> Result<()> {
    let api = &ctx.api;
    let req = api.request(pb::WakeDeploymentRequest {
        deployment_id: id.to_owned(),
        actor: Some(ctx.actor()),
    });
    api.call(
        &format!("waking {id}"),
        api.deployments().wake_deployment(req),
    )
    .await?;
    // The worker's wake sets the desired state to running first; follow once it has.
    let mut waited = 0;
    loop {
        let d = resolve::deployment(api, id).await?;
        if d.desired_state == pb::DesiredState::Running as i32 {
            break;
        }
        waited += 1;
        if waited > 75 {
            bail!(
                "the wake of {id} has not started after 15 s; `ctrl deployments get {id}` shows where it is"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    if !ctx.json() {
        eprintln!("Waking {id}");
    }
    let mut progress =
        crate::progress::Progress::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let followed = super::deploy::follow(ctx, id, &mut progress).await;
    progress.finish();
    let d = followed?;
    if ctx.json() {
        output::json(&d)?;
    }
    match pb::DeploymentStatus::try_from(d.status) {
        Ok(pb::DeploymentStatus::Ready) => {
            if !ctx.json() {
                println!("\n✓ {id} is ready again");
                for url in urls(&d, ctx.edge_https_port) {
                    println!("  {url}");
                }
            }
            Ok(())
        }
        _ => Err(anyhow!(
            "{id} could not be woken ({}){}",
            status(d.status),
            if d.error_message.is_empty() {
                String::new()
            } else {
                format!(": {}", d.error_message)
            }
        )),
    }
}
