//! The command line, as clap parses it.

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// ctrl: deploy apps and move their traffic.
#[derive(Debug, Parser)]
#[command(
    name = "ctrl",
    version,
    about = "Deploy apps with ctrl and move their traffic",
    after_help = "The API address and token come from --api-url/--token, CTRL_API_URL/CTRL_TOKEN, \
                  or the .dev/stack.env the local stack writes (found in this directory or a parent), \
                  which also names the demo workspace (CTRL_WORKSPACE)."
)]
pub struct Cli {
    /// ctrl-api's address [env: CTRL_API_URL; default: stack.env, then http://127.0.0.1:7091]
    #[arg(long, global = true)]
    pub api_url: Option<String>,
    /// API token [env: CTRL_TOKEN; default: stack.env]
    #[arg(long, global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Workspace (id or slug); needed only when there is more than one [env: CTRL_WORKSPACE; default: stack.env]
    #[arg(long, short = 'w', global = true)]
    pub workspace: Option<String>,
    /// Output format: tables and progress for people, JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Seconds to wait for each API call.
    #[arg(long, global = true, default_value_t = 30)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned tables and a live progress display.
    Text,
    /// One JSON document on stdout (the API's JSON mapping).
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Workspaces: the tenants that own projects.
    #[command(subcommand)]
    Workspaces(WorkspaceCommand),
    /// Projects: groups of apps in a workspace.
    #[command(subcommand)]
    Projects(ProjectCommand),
    /// Apps: what gets deployed.
    #[command(subcommand)]
    Apps(AppCommand),
    /// Environments of an app (production, preview, and more).
    #[command(subcommand)]
    Envs(EnvsCommand),
    /// Environment variables of an app's environment.
    #[command(subcommand)]
    Env(EnvCommand),
    /// Deploy an image, a git commit or a local directory and follow it until it is ready.
    Deploy(DeployArgs),
    /// List and inspect deployments.
    #[command(subcommand)]
    Deployments(DeploymentsCommand),
    /// Move the app's live traffic back to an earlier production deployment.
    Rollback(RollbackArgs),
    /// Make a ready production deployment live (also confirms a rollback).
    Promote(DeploymentArg),
    /// Cancel a deployment that is still in progress.
    Cancel(DeploymentArg),
    /// Stop the instances of a non-live, non-production deployment.
    Stop(DeploymentArg),
    /// Start a stopped deployment's instances again and follow it until it is ready.
    Wake(DeploymentArg),
    /// Print a deployment's output (its instances' stdout and stderr).
    Logs(LogsArgs),
    /// Custom domains: your own hostnames, routed to an environment's live deployment.
    #[command(subcommand)]
    Domains(DomainsCommand),
    /// GitHub repositories connected to apps: pushes and pull requests deploy them.
    #[command(subcommand)]
    Repos(ReposCommand),
    /// Regions and their agents' credentials (operators).
    #[command(subcommand)]
    Regions(RegionsCommand),
}

/// `ctrl workspaces …`
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace.
    Create {
        /// Slug: lowercase letters, digits and "-", starting with a letter.
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// List workspaces.
    List,
    /// Show one workspace.
    Get {
        /// Id or slug.
        workspace: String,
    },
    /// Delete a workspace with all its projects, apps and deployments.
    Delete {
        /// Id or slug.
        workspace: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ctrl projects …`
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Slug: lowercase letters, digits and "-", starting with a letter.
        slug: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the workspace's projects.
    List,
    /// Show one project.
    Get {
        /// Id or slug.
        project: String,
    },
    /// Delete a project with its apps and deployments.
    Delete {
        /// Id or slug.
        project: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ctrl apps …`
#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Create an app (with its production and preview environments).
    Create {
        /// Slug: lowercase letters, digits and "-", starting with a letter.
        slug: String,
        /// The project (id or slug).
        #[arg(long, short)]
        project: String,
        /// Display name (default: the slug).
        #[arg(long)]
        name: Option<String>,
        /// Branch whose pushes deploy to production.
        #[arg(long, default_value = "main")]
        default_branch: String,
    },
    /// List apps (of one project, or of the whole workspace).
    List {
        /// Only this project (id or slug).
        #[arg(long, short)]
        project: Option<String>,
    },
    /// Show one app.
    Get {
        /// Id, `project/app`, or an app slug unique in the workspace.
        app: String,
    },
    /// Delete an app with its environments and deployments.
    Delete {
        /// Id, `project/app`, or an app slug unique in the workspace.
        app: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ctrl envs …`
#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Create a preview-kind environment (e.g. staging).
    Create {
        /// Slug: lowercase letters, digits and "-", starting with a letter.
        slug: String,
        #[command(flatten)]
        app: AppArg,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List an app's environments.
    List {
        #[command(flatten)]
        app: AppArg,
    },
    /// Show one environment.
    Get {
        /// Slug or id.
        env: String,
        #[command(flatten)]
        app: AppArg,
    },
    /// Delete an environment with its deployments.
    Delete {
        /// Slug or id.
        env: String,
        #[command(flatten)]
        app: AppArg,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ctrl env …`
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List variables (values hidden unless --reveal).
    List {
        #[command(flatten)]
        target: EnvTarget,
        /// Show the values of recoverable variables.
        #[arg(long)]
        reveal: bool,
    },
    /// Create or replace variables.
    Set {
        #[command(flatten)]
        target: EnvTarget,
        /// The variables, as KEY=VALUE.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Write-only: the value is never shown again, only the app sees it.
        #[arg(long)]
        write_only: bool,
        /// Also hand the value to image builds from source as a secret
        /// (`RUN --mount=type=secret,id=KEY`), never as a build argument.
        #[arg(long)]
        build_secret: bool,
    },
    /// Remove variables.
    Unset {
        #[command(flatten)]
        target: EnvTarget,
        /// The keys.
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

/// `ctrl deploy …`
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("source").args(["image", "git", "context"]).required(true).multiple(true)),
    after_help = "What to deploy, exactly one of: --image IMAGE, --git OWNER/REPO (with --context \
                  DIR: a directory inside the repository), or --context DIR (a local directory, \
                  uploaded and built like `docker build DIR`, leaving out what .dockerignore names)."
)]
pub struct DeployArgs {
    #[command(flatten)]
    pub target: EnvTarget,
    /// An image to deploy, e.g. ghcr.io/acme/api:1.2.3.
    #[arg(long, conflicts_with_all = ["git", "context"])]
    pub image: Option<String>,
    /// A GitHub repository to build, as owner/repo.
    #[arg(long, value_name = "OWNER/REPO")]
    pub git: Option<String>,
    /// The GitHub App installation that can read the repository (with --git;
    /// default: none, which works for public repositories only).
    #[arg(long, value_name = "ID", requires = "git", value_parser = clap::value_parser!(i64).range(1..))]
    pub installation: Option<i64>,
    /// Git branch (the build's branch, or the branch an image came from).
    #[arg(long)]
    pub branch: Option<String>,
    /// Git commit SHA (40 hex characters).
    #[arg(long)]
    pub commit: Option<String>,
    /// A local directory to upload and build; with --git, the directory
    /// inside the repository to build.
    #[arg(long, value_name = "DIR")]
    pub context: Option<String>,
    /// Dockerfile inside the context [default: Dockerfile for a local
    /// directory; the app's build settings with --git].
    #[arg(long, value_name = "FILE", conflicts_with = "image")]
    pub dockerfile: Option<String>,
    /// A build argument (Dockerfile ARG) as KEY=VALUE; repeatable. Not for
    /// secrets: build arguments stay readable in the image's history.
    #[arg(
        long = "build-arg",
        value_name = "KEY=VALUE",
        conflicts_with = "image",
        value_parser = parse_build_arg
    )]
    pub build_args: Vec<(String, String)>,
    /// Why this deployment is made.
    #[arg(long)]
    pub reason: Option<String>,
    /// Return as soon as the deployment is created (prints its id).
    #[arg(long)]
    pub detach: bool,
    /// Print every line of the build's output (on a terminal the building
    /// step otherwise shows only its latest line; piped, every line is
    /// printed anyway).
    #[arg(long, short)]
    pub verbose: bool,
    /// Command overriding the app's, for this deployment only (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `KEY=VALUE` of `--build-arg`: the key like an environment variable's
/// name (letters, digits and "_", not starting with a digit), the value
/// anything (also empty).
pub fn parse_build_arg(arg: &str) -> Result<(String, String), String> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err("expected KEY=VALUE, e.g. --build-arg VERSION=1.2.3".into());
    };
    let good = key.len() <= 256
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !good {
        return Err(format!(
            "{key:?} is not a build argument name: letters, digits and \"_\", not starting with a digit"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `ctrl deployments …`
#[derive(Debug, Subcommand)]
pub enum DeploymentsCommand {
    /// List an app's deployments, newest first.
    List {
        #[command(flatten)]
        app: AppArg,
        /// Only this environment.
        #[arg(long, short)]
        env: Option<String>,
        /// Only this git branch.
        #[arg(long)]
        branch: Option<String>,
        /// Only these statuses (e.g. ready, failed).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a deployment: steps, URLs, regions and instances.
    Get(DeploymentArg),
    /// Start a deployment that awaits approval (a pull request from a fork).
    Approve(DeploymentArg),
    /// Delete a deployment that is not live: its instances stop, then it
    /// and its URLs are removed.
    Delete {
        /// The deployment.
        deployment: String,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// `ctrl repos …`
#[derive(Debug, Subcommand)]
pub enum ReposCommand {
    /// Connect an app to a GitHub repository (replacing its earlier one):
    /// pushes to the app's default branch deploy production, other branches
    /// and pull requests deploy previews.
    Connect {
        #[command(flatten)]
        app: AppArg,
        /// The repository, as owner/repo.
        #[arg(long, value_name = "OWNER/REPO")]
        repo: String,
        /// The GitHub App installation with access to the repository.
        #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
        installation: i64,
    },
    /// List the workspace's connected repositories (or one app's).
    List {
        /// Only this app: id, `project/app`, or an app slug unique in the workspace.
        #[arg(long, short)]
        app: Option<String>,
    },
    /// Disconnect an app from its repository; pushes stop deploying it.
    Disconnect {
        #[command(flatten)]
        app: AppArg,
    },
}

/// `ctrl regions …`
#[derive(Debug, Subcommand)]
pub enum RegionsCommand {
    /// List the regions, whether they take new deployments, and their agents' last heartbeat.
    List,
    /// Credentials of the regional agents (krane, frontline).
    #[command(subcommand)]
    Agents(AgentsCommand),
}

/// Which agent a credential is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AgentKind {
    /// The workload agent: bound to one cluster (platform, region, cell).
    Krane,
    /// The edge: bound to one region.
    Frontline,
}

/// `ctrl regions agents …`
#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Issue a credential for one agent; its token is printed once (set it as the agent's
    /// `[control] token`).
    Add {
        /// The agent.
        #[arg(long, value_enum)]
        kind: AgentKind,
        /// Platform of the region, e.g. aws.
        #[arg(long)]
        platform: String,
        /// The region, e.g. us-east-1.
        #[arg(long)]
        region: String,
        /// krane's cell id (required for krane, refused for frontline).
        #[arg(long, required_if_eq("kind", "krane"))]
        cell: Option<String>,
        /// A label for operators; default: `<kind> <platform>/<region>[/<cell>]`.
        #[arg(long)]
        name: Option<String>,
    },
    /// List agent credentials (never their tokens).
    List {
        /// Only this region's, as platform/region.
        #[arg(long, value_name = "PLATFORM/REGION")]
        region: Option<String>,
        /// Include revoked credentials.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a credential: its agent's calls are refused and its streams end.
    Revoke {
        /// The credential (agt_…).
        credential: String,
    },
}

/// `ctrl rollback …`
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The deployment to go back to; default: the newest running production
    /// deployment older than the live one (needs --app).
    pub deployment: Option<String>,
    /// The app (when no deployment is named).
    #[arg(long, short)]
    pub app: Option<String>,
}

/// `ctrl logs …`
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The deployment (d_…); default: the live deployment of --app.
    #[arg(required_unless_present = "app")]
    pub deployment: Option<String>,
    /// The app whose live deployment to read (when no deployment is named).
    #[arg(long, short, conflicts_with = "deployment")]
    pub app: Option<String>,
    /// Print the deployment's build output (a deployment made from source)
    /// instead of its instances' output; ends with the build's result.
    #[arg(long, short, conflicts_with_all = ["tail", "region"])]
    pub build: bool,
    /// Keep printing new lines until interrupted (with --build: until the
    /// build ends).
    #[arg(long, short)]
    pub follow: bool,
    /// Lines of each instance's past output to start with (0: only new
    /// lines; at most 10000).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub tail: u32,
    /// Only this region.
    #[arg(long)]
    pub region: Option<String>,
    /// Start each line with the time the engine recorded it.
    #[arg(long, short)]
    pub timestamps: bool,
}

/// `ctrl domains …`
#[derive(Debug, Subcommand)]
pub enum DomainsCommand {
    /// Add a custom domain to an environment; prints the DNS records to publish.
    Add {
        #[command(flatten)]
        target: EnvTarget,
        /// The hostname, e.g. shop.example.com.
        #[arg(value_name = "HOST")]
        domain: String,
    },
    /// List an environment's custom domains.
    List {
        #[command(flatten)]
        target: EnvTarget,
    },
    /// Show a custom domain: its records, what the last check found, its certificate.
    Get(DomainArg),
    /// Check a custom domain's records again now (also restarts a
    /// verification that gave up).
    Verify(DomainArg),
    /// Remove a custom domain: it stops routing, its certificate is deleted.
    #[command(visible_alias = "delete")]
    Rm {
        #[command(flatten)]
        domain: DomainArg,
        #[command(flatten)]
        confirm: Confirm,
    },
}

/// One custom domain, by hostname or id.
#[derive(Debug, Args)]
pub struct DomainArg {
    /// The hostname (e.g. shop.example.com) or the domain's id (dom_…).
    #[arg(value_name = "HOST")]
    pub domain: String,
    /// The app it belongs to: id, `project/app`, or an app slug unique in
    /// the workspace [default: any app of the workspace].
    #[arg(long, short)]
    pub app: Option<String>,
    /// The environment's slug (with --app) [default: any of the app's].
    #[arg(long, short, requires = "app")]
    pub env: Option<String>,
}

/// One deployment by id.
#[derive(Debug, Args)]
pub struct DeploymentArg {
    /// The deployment's id (d_…).
    pub deployment: String,
}

/// `--app`.
#[derive(Debug, Args)]
pub struct AppArg {
    /// The app: id, `project/app`, or an app slug unique in the workspace.
    #[arg(long, short)]
    pub app: String,
}

/// `--app` and `--env`.
#[derive(Debug, Args)]
pub struct EnvTarget {
    /// The app: id, `project/app`, or an app slug unique in the workspace.
    #[arg(long, short)]
    pub app: String,
    /// The environment's slug.
    #[arg(long, short, default_value = "production")]
    pub env: String,
}

/// Confirmation of a destructive command.
#[derive(Debug, Args)]
pub struct Confirm {
    /// Do not ask for confirmation.
    #[arg(long, short)]
    pub yes: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn domains(args: &[&str]) -> Result<DomainsCommand, clap::Error> {
        let cli = Cli::try_parse_from(["ctrl", "domains"].iter().chain(args))?;
        match cli.command {
            Command::Domains(c) => Ok(c),
            other => panic!("not a domains command: {other:?}"),
        }
    }

    fn deploy(args: &[&str]) -> Result<DeployArgs, clap::Error> {
        let cli = Cli::try_parse_from(["ctrl", "deploy", "--app", "web"].iter().chain(args))?;
        match cli.command {
            Command::Deploy(d) => Ok(d),
            other => panic!("not a deploy command: {other:?}"),
        }
    }

    #[test]
    fn a_deploy_takes_exactly_one_source() {
        use clap::error::ErrorKind;
        let e = deploy(&[]).expect_err("no source");
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let text = e.to_string();
        for flag in ["--image", "--git", "--context"] {
            assert!(text.contains(flag), "{text}");
        }
        for two in [
            &["--image", "a", "--git", "o/r"][..],
            &["--image", "a", "--context", "."],
            &["--image", "a", "--git", "o/r", "--context", "sub"],
        ] {
            let e = deploy(two).expect_err("two sources");
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{two:?}");
            assert!(e.to_string().contains("cannot be used with"), "{e}");
        }

        let d = deploy(&["--image", "ghcr.io/acme/api:1"]).expect("an image");
        assert_eq!(d.image.as_deref(), Some("ghcr.io/acme/api:1"));
        let d = deploy(&["--context", "./app"]).expect("a local directory");
        assert_eq!((d.context.as_deref(), d.git), (Some("./app"), None));
        // With --git, --context is the directory inside the repository.
        let d = deploy(&[
            "--git",
            "acme/api",
            "--context",
            "services/api",
            "--dockerfile",
            "Dockerfile.prod",
            "--branch",
            "main",
            "--installation",
            "42",
        ])
        .expect("a git build");
        assert_eq!(d.git.as_deref(), Some("acme/api"));
        assert_eq!(d.context.as_deref(), Some("services/api"));
        assert_eq!(d.dockerfile.as_deref(), Some("Dockerfile.prod"));
        assert_eq!(d.installation, Some(42));

        // Build inputs need something to build.
        for with_an_image in [
            &["--image", "a", "--dockerfile", "D"][..],
            &["--image", "a", "--build-arg", "A=1"],
        ] {
            let e = deploy(with_an_image).expect_err("a build input without a build");
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{with_an_image:?}");
        }
        let e = deploy(&["--context", ".", "--installation", "42"]).expect_err("not git");
        assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument);
        let e = deploy(&["--git", "o/r", "--installation", "0"]).expect_err("installation 0");
        assert_eq!(e.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn build_args_are_key_value_pairs_with_variable_like_keys() {
        use clap::error::ErrorKind;
        let d = deploy(&[
            "--context",
            ".",
            "--build-arg",
            "VERSION=1.2.3",
            "--build-arg",
            "FLAGS=a=b c",
            "--build-arg",
            "_EMPTY=",
            "-v",
        ])
        .expect("build args");
        assert_eq!(
            d.build_args,
            [
                ("VERSION".to_owned(), "1.2.3".to_owned()),
                ("FLAGS".to_owned(), "a=b c".to_owned()),
                ("_EMPTY".to_owned(), String::new()),
            ]
        );
        assert!(d.verbose);

        for (bad, says) in [
            ("VERSION", "expected KEY=VALUE"),
            ("=1", "\"\" is not a build argument name"),
            ("1X=1", "\"1X\" is not a build argument name"),
            ("A-B=1", "letters, digits and \"_\""),
        ] {
            let e = deploy(&["--git", "o/r", "--build-arg", bad]).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad}");
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn logs_of_a_build_name_the_deployment_like_other_logs() {
        use clap::error::ErrorKind;
        let logs = |args: &[&str]| -> Result<LogsArgs, clap::Error> {
            let cli = Cli::try_parse_from(["ctrl", "logs"].iter().chain(args))?;
            match cli.command {
                Command::Logs(l) => Ok(l),
                other => panic!("not a logs command: {other:?}"),
            }
        };
        let l = logs(&["--build", "d_1", "--follow", "--timestamps"]).expect("by id");
        assert!(l.build && l.follow && l.timestamps);
        assert_eq!(l.deployment.as_deref(), Some("d_1"));
        let l = logs(&["-b", "--app", "web"]).expect("the live deployment's");
        assert_eq!((l.build, l.app.as_deref()), (true, Some("web")));
        for instance_only in [
            &["--build", "-n", "5", "d_1"][..],
            &["--build", "--region", "x", "d_1"],
        ] {
            let e = logs(instance_only).expect_err("an instance-log flag");
            assert_eq!(e.kind(), ErrorKind::ArgumentConflict, "{instance_only:?}");
        }
        assert_eq!(
            logs(&["--build"]).expect_err("nothing named").kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn domains_add_and_list_take_an_app_and_default_to_production() {
        let Ok(DomainsCommand::Add { target, domain }) =
            domains(&["add", "--app", "shop/web", "shop.example.com"])
        else {
            panic!("add did not parse");
        };
        assert_eq!(
            (target.app.as_str(), target.env.as_str(), domain.as_str()),
            ("shop/web", "production", "shop.example.com")
        );
        let Ok(DomainsCommand::List { target }) = domains(&["list", "-a", "web", "-e", "preview"])
        else {
            panic!("list did not parse");
        };
        assert_eq!(target.env, "preview");

        for missing in [
            &["add", "shop.example.com"][..],
            &["add", "--app", "web"],
            &["list"],
        ] {
            let e = domains(missing).expect_err("parsed without a required argument");
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        }
    }

    #[test]
    fn repos_take_an_app_a_repository_and_a_positive_installation() {
        use clap::error::ErrorKind;
        let repos = |args: &[&str]| -> Result<ReposCommand, clap::Error> {
            let cli = Cli::try_parse_from(["ctrl", "repos"].iter().chain(args))?;
            match cli.command {
                Command::Repos(c) => Ok(c),
                other => panic!("not a repos command: {other:?}"),
            }
        };
        let Ok(ReposCommand::Connect {
            app,
            repo,
            installation,
        }) = repos(&[
            "connect",
            "--app",
            "shop/web",
            "--repo",
            "acme/web",
            "--installation",
            "42",
        ])
        else {
            panic!("connect did not parse");
        };
        assert_eq!(
            (app.app.as_str(), repo.as_str(), installation),
            ("shop/web", "acme/web", 42)
        );
        for bad in [
            &["connect", "--app", "web", "--repo", "acme/web"][..],
            &["connect", "--app", "web", "--installation", "1"],
            &["connect", "--repo", "acme/web", "--installation", "1"],
            &["disconnect"],
        ] {
            let e = repos(bad).expect_err("parsed without a required argument");
            assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{bad:?}");
        }
        for zero in ["0", "-1"] {
            let e = repos(&[
                "connect",
                "--app",
                "web",
                "--repo",
                "acme/web",
                "--installation",
                zero,
            ])
            .expect_err("installation 0");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::ValueValidation | ErrorKind::UnknownArgument
                ),
                "{zero}: {e}"
            );
        }
        assert!(matches!(
            repos(&["list"]),
            Ok(ReposCommand::List { app: None })
        ));
        assert!(matches!(
            repos(&["disconnect", "-a", "web"]),
            Ok(ReposCommand::Disconnect { app }) if app.app == "web"
        ));
        let cli = Cli::try_parse_from(["ctrl", "deployments", "approve", "d_1"]).expect("approve");
        assert!(matches!(
            cli.command,
            Command::Deployments(DeploymentsCommand::Approve(DeploymentArg { ref deployment })) if deployment == "d_1"
        ));
    }

    #[test]
    fn domains_get_verify_and_rm_take_a_host_or_an_id() {
        let Ok(DomainsCommand::Get(arg)) = domains(&["get", "dom_abc"]) else {
            panic!("get did not parse");
        };
        assert_eq!(
            (arg.domain.as_str(), arg.app, arg.env),
            ("dom_abc", None, None)
        );
        let Ok(DomainsCommand::Verify(arg)) = domains(&[
            "verify",
            "--app",
            "web",
            "--env",
            "preview",
            "shop.example.com",
        ]) else {
            panic!("verify did not parse");
        };
        assert_eq!(arg.app.as_deref(), Some("web"));
        assert_eq!(arg.env.as_deref(), Some("preview"));
        let Ok(DomainsCommand::Rm { domain, confirm }) =
            domains(&["rm", "--yes", "--app", "web", "shop.example.com"])
        else {
            panic!("rm did not parse");
        };
        assert!(confirm.yes);
        assert_eq!(domain.domain, "shop.example.com");
        assert!(matches!(
            domains(&["delete", "shop.example.com"]),
            Ok(DomainsCommand::Rm {
                confirm: Confirm { yes: false },
                ..
            })
        ));

        // An environment belongs to an app.
        let e = domains(&["get", "--env", "preview", "shop.example.com"])
            .expect_err("--env without --app parsed");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(domains(&["get"]).is_err());
    }
}
