//! `ctrl env list|set|unset`: values are sent, never printed unless asked.

use anyhow::{Result, bail};
use ctrl_proto::ctrl::v1 as pb;

use super::Ctx;
use crate::args::EnvCommand;
use crate::output::{self, Table, ago, enum_name};
use crate::resolve;

/// `ctrl env …`
pub(super) async fn run(ctx: &Ctx, cmd: EnvCommand) -> Result<()> {
    let api = &ctx.api;
    match cmd {
        EnvCommand::List { target, reveal } => {
            let app = resolve::app(api, ctx.workspace_ref(), &target.app).await?;
            let req = api.request(pb::ListEnvironmentVariablesRequest {
                app_id: app.id,
                environment_slug: target.env,
                reveal_values: reveal,
            });
            let vars = api
                .call(
                    "listing variables",
                    api.apps().list_environment_variables(req),
                )
                .await?
                .variables;
            if ctx.json() {
                return output::json(&vars);
            }
            let mut table = Table::new(&["KEY", "VALUE", "TYPE", "BUILD", "UPDATED"]);
            for v in vars {
                let writeonly = v.r#type == pb::EnvironmentVariableType::Writeonly as i32;
                let value = match (reveal, writeonly) {
                    (_, true) => "(write-only)".to_owned(),
                    (true, false) => v.value,
                    (false, false) => "••••••".to_owned(),
                };
                let build = if v.build_secret { "secret" } else { "-" }.to_owned();
                table.row(vec![v.key, value, kind(v.r#type), build, ago(v.updated_at)]);
            }
            table.print("no variables; set one with `ctrl env set KEY=VALUE --app <app>`")
        }
        EnvCommand::Set {
            target,
            pairs,
            write_only,
            build_secret,
        } => {
            let variables = pairs
                .iter()
                .enumerate()
                .map(|(i, pair)| parse_pair(i + 1, pair, write_only, build_secret))
                .collect::<Result<Vec<_>>>()?;
            let app = resolve::app(api, ctx.workspace_ref(), &target.app).await?;
            let req = api.request(pb::SetEnvironmentVariablesRequest {
                app_id: app.id.clone(),
                environment_slug: target.env.clone(),
                variables,
                actor: Some(ctx.actor()),
            });
            let keys = api
                .call(
                    "setting variables",
                    api.apps().set_environment_variables(req),
                )
                .await?
                .keys;
            ctx.done(&format!(
                "set {} in {} ({}); new deployments get them",
                keys.join(", "),
                resolve::app_label(&target.app, &app),
                target.env
            ))
        }
        EnvCommand::Unset { target, keys } => {
            let app = resolve::app(api, ctx.workspace_ref(), &target.app).await?;
            let req = api.request(pb::DeleteEnvironmentVariablesRequest {
                app_id: app.id,
                environment_slug: target.env.clone(),
                keys: keys.clone(),
                actor: Some(ctx.actor()),
            });
            let deleted = api
                .call(
                    "removing variables",
                    api.apps().delete_environment_variables(req),
                )
                .await?
                .deleted_keys;
            let missing: Vec<&String> = keys.iter().filter(|k| !deleted.contains(k)).collect();
            let mut line = if deleted.is_empty() {
                "removed nothing".to_owned()
            } else {
                format!("removed {}", deleted.join(", "))
            };
            if !missing.is_empty() {
                line.push_str(&format!(
                    "; not set: {}",
                    missing
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            ctx.done(&line)
        }
    }
}

/// The `n`th `KEY=VALUE` (the value may contain `=`); the key is checked by
/// the API. Errors never repeat the argument: it may hold a secret.
fn parse_pair(
    n: usize,
    pair: &str,
    write_only: bool,
    build_secret: bool,
) -> Result<pb::EnvironmentVariable> {
    let Some((key, value)) = pair.split_once('=') else {
        bail!("variable {n} is not KEY=VALUE (no `=`)");
    };
    if key.is_empty() {
        bail!("variable {n} has no key before the `=`");
    }
    Ok(pb::EnvironmentVariable {
        key: key.to_owned(),
        value: value.to_owned(),
        r#type: if write_only {
            pb::EnvironmentVariableType::Writeonly
        } else {
            pb::EnvironmentVariableType::Recoverable
        } as i32,
        build_secret,
        ..Default::default()
    })
}

fn kind(value: i32) -> String {
    pb::EnvironmentVariableType::try_from(value).map_or_else(
        |_| value.to_string(),
        |k| enum_name(k.as_str_name(), "ENVIRONMENT_VARIABLE_TYPE_"),
    )
}
