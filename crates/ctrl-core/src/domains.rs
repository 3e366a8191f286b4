//! The hostnames a deployment gets (seed 002 and the reference's
//! `buildDomains`), made safe.
//!
//! | pattern | stickiness | when |
//! |---|---|---|
//! | `{prefix}-git-{sha7}[-{id4}]-{ws}.{apex}` | none | a commit SHA is known (`-{id4}` for CLI deploys) |
//! | `{prefix}-git-{branch}-{ws}.{apex}` | branch | a branch is known |
//! | `{prefix}-{env}-{ws}.{apex}` | environment | always |
//! | `{prefix}-{ws}.{apex}` | live | production only |
//! | `{prefix}-{deployment-id}-{ws}.{apex}` | deployment | always |
//!
//! `prefix` is the project slug, plus `-{app}` unless the app is `default`,
//! plus `-fork-{owner}` for a fork.
//!
//! Guarantees, beyond the original:
//! - every host is a valid lowercase hostname: labels of at most 63 bytes,
//!   at most 253 in all, no leading/trailing or doubled hyphens;
//! - a branch whose name is not already DNS-safe (uppercase, punctuation,
//!   non-ASCII, or too long) gets a hash of its exact name in its label, so
//!   two branches never share a host by slugging to the same text;
//! - a label that would exceed 63 bytes is shortened and given a hash of
//!   its full form, keeping it unique;
//! - readable names can still clash across owners because slugs contain
//!   hyphens (project `a-b` + workspace `c` vs project `a` + workspace
//!   `b-c`). Each host therefore names its [`RouteOwner`] and carries a
//!   `fallback_fqdn` made unique by a hash of that owner: the route writer
//!   uses it when the readable name already belongs to another owner;
//! - the same inputs always give the same hosts (no randomness).

use std::fmt;

use crate::names::{self, MAX_HOSTNAME_LEN, MAX_LABEL_LEN, short_hash, sluggify};

/// How a route follows deployments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sticky {
    /// Pinned to a commit.
    None,
    /// Follows the branch's newest ready deployment.
    Branch,
    /// Follows the environment's newest ready deployment.
    Environment,
    /// Follows the app's live deployment.
    Live,
    /// Unique to one deployment.
    Deployment,
}

impl Sticky {
    /// The database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Branch => "branch",
            Self::Environment => "environment",
            Self::Live => "live",
            Self::Deployment => "deployment",
        }
    }

    /// Every stickiness.
    pub const ALL: [Self; 5] = [
        Self::None,
        Self::Branch,
        Self::Environment,
        Self::Live,
        Self::Deployment,
    ];
}

impl std::str::FromStr for Sticky {
    type Err = crate::status::UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| crate::status::UnknownName {
                what: "route stickiness",
                value: s.to_owned(),
            })
    }
}

/// What a route belongs to; two routes with the same FQDN must have the same owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteOwner {
    /// A commit in an environment (and, for CLI deploys, one deployment).
    Commit {
        /// The environment.
        environment_id: String,
        /// The commit SHA.
        sha: String,
        /// Set for CLI deploys, whose commit host is unique per deployment.
        deployment_id: Option<String>,
    },
    /// A branch in an environment (exact branch name).
    Branch {
        /// The environment.
        environment_id: String,
        /// The exact git branch name.
        branch: String,
    },
    /// An environment.
    Environment {
        /// The environment.
        environment_id: String,
    },
    /// The live deployment of the app whose production environment this is.
    Live {
        /// The production environment.
        environment_id: String,
    },
    /// One deployment.
    Deployment {
        /// The deployment.
        deployment_id: String,
    },
}

/// What decides who an existing route belongs to: the route and the
/// deployment it points at now.
#[derive(Debug, Clone, Copy)]
pub struct ExistingRoute<'a> {
    /// The route's environment.
    pub environment_id: &'a str,
    /// The route's stickiness.
    pub sticky: Sticky,
    /// The deployment the route points at.
    pub deployment_id: &'a str,
    /// That deployment's commit.
    pub git_commit_sha: Option<&'a str>,
    /// That deployment's branch.
    pub git_branch: Option<&'a str>,
}

impl RouteOwner {
    /// Whether `route` (found under this owner's readable hostname) belongs
    /// to this owner, so a deployment may take it over; if not, the
    /// deployment uses the owner's fallback hostname instead.
    pub fn owns(&self, route: &ExistingRoute<'_>) -> bool {
        match self {
            Self::Commit {
                environment_id,
                sha,
                deployment_id,
            } => {
                route.sticky == Sticky::None
                    && route.environment_id == environment_id
                    && route.git_commit_sha == Some(sha.as_str())
                    && deployment_id
                        .as_deref()
                        .is_none_or(|d| d == route.deployment_id)
            }
            Self::Branch {
                environment_id,
                branch,
            } => {
                route.sticky == Sticky::Branch
                    && route.environment_id == environment_id
                    && route.git_branch == Some(branch.as_str())
            }
            Self::Environment { environment_id } => {
                route.sticky == Sticky::Environment && route.environment_id == environment_id
            }
            Self::Live { environment_id } => {
                route.sticky == Sticky::Live && route.environment_id == environment_id
            }
            Self::Deployment { deployment_id } => {
                route.sticky == Sticky::Deployment && route.deployment_id == deployment_id
            }
        }
    }

    fn hash_parts(&self) -> Vec<&str> {
        match self {
            Self::Commit {
                environment_id,
                sha,
                deployment_id,
            } => {
                vec![
                    "commit",
                    environment_id,
                    sha,
                    deployment_id.as_deref().unwrap_or(""),
                ]
            }
            Self::Branch {
                environment_id,
                branch,
            } => vec!["branch", environment_id, branch],
            Self::Environment { environment_id } => vec!["environment", environment_id],
            Self::Live { environment_id } => vec!["live", environment_id],
            Self::Deployment { deployment_id } => vec!["deployment", deployment_id],
        }
    }
}

/// One generated hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedHost {
    /// The readable hostname.
    pub fqdn: String,
    /// A hostname unique to `owner`, for when `fqdn` belongs to another owner.
    pub fallback_fqdn: String,
    /// How the route follows deployments.
    pub sticky: Sticky,
    /// Who the route belongs to.
    pub owner: RouteOwner,
}

/// Everything hostnames are made of.
#[derive(Debug, Clone)]
pub struct HostInputs<'a> {
    /// The platform's apex domain, e.g. "ctrl.example.com".
    pub apex: &'a str,
    /// Workspace slug.
    pub workspace_slug: &'a str,
    /// Project slug.
    pub project_slug: &'a str,
    /// App slug ("default" is left out of hostnames).
    pub app_slug: &'a str,
    /// Environment slug.
    pub environment_slug: &'a str,
    /// Environment id (route ownership).
    pub environment_id: &'a str,
    /// Whether the environment is the app's production environment.
    pub is_production: bool,
    /// The deployment id.
    pub deployment_id: &'a str,
    /// Full commit SHA, if known.
    pub git_commit_sha: Option<&'a str>,
    /// Exact branch name, if known.
    pub git_branch: Option<&'a str>,
    /// Owner login of the fork the commit comes from, if any.
    pub fork_owner: Option<&'a str>,
    /// Make the commit host unique to this deployment (CLI deploys, which may
    /// redeploy one commit with different local changes).
    pub unique_commit_host: bool,
}

/// Why hostnames cannot be generated (a configuration or validation bug upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostError(String);

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HostError {}

/// Longest apex domain: one full label must still fit in front of it.
pub const MAX_APEX_LEN: usize = MAX_HOSTNAME_LEN - MAX_LABEL_LEN - 1;

/// Owner of the platform's own certificates (its wildcard): the keyring
/// their private keys are sealed with. ACME accounts are owned per CA
/// ([`acme_account_owner`]).
pub const PLATFORM_OWNER: &str = "ctrl_platform";

/// The owner of the platform's ACME account at one CA: one account per
/// directory, so moving from a staging CA to production (or between CAs)
/// registers a new account instead of presenting the old CA's to the new.
pub fn acme_account_owner(directory_url: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(directory_url.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{PLATFORM_OWNER}:{short}")
}

/// Why a hostname cannot be a custom domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomDomainError(pub String);

impl fmt::Display for CustomDomainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CustomDomainError {}

/// A user's hostname as ctrl stores it (lowercase, no trailing dot), or why
/// it cannot be a custom domain: a valid DNS name of at least two labels,
/// no wildcard, no IP address, and not under the platform's own domains
/// (`platform_domains`: the apex and the CNAME-target domain).
pub fn normalize_custom_domain(
    input: &str,
    platform_domains: &[&str],
) -> Result<String, CustomDomainError> {
    let domain = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.starts_with("*.") {
        return Err(CustomDomainError(format!(
            "{input:?}: wildcard custom domains are not supported; add each hostname"
        )));
    }
    if domain.parse::<std::net::IpAddr>().is_ok() {
        return Err(CustomDomainError(format!(
            "{input:?} is an IP address; a custom domain is a hostname"
        )));
    }
    if !names::is_hostname(&domain) || !domain.contains('.') {
        return Err(CustomDomainError(format!(
            "{input:?} is not a valid hostname (letters, digits and '-' in dot-separated labels of 1-63 characters, at most 253 in all, e.g. \"shop.example.com\")"
        )));
    }
    if domain
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(CustomDomainError(format!(
            "{input:?}: the top-level label cannot be numeric"
        )));
    }
    for platform in platform_domains.iter().filter(|p| !p.is_empty()) {
        if domain == *platform || domain.ends_with(&format!(".{platform}")) {
            return Err(CustomDomainError(format!(
                "{input:?} is under the platform's own domain {platform}; its hostnames are generated"
            )));
        }
    }
    Ok(domain)
}

/// The label under which a custom domain's ownership TXT record lives.
pub const OWNERSHIP_TXT_LABEL: &str = "_ctrl";
/// The ownership TXT value's prefix.
pub const OWNERSHIP_TXT_PREFIX: &str = "ctrl-domain-verify=";

/// The name of a custom domain's ownership record: `_ctrl.{domain}`.
pub fn ownership_txt_name(domain: &str) -> String {
    format!("{OWNERSHIP_TXT_LABEL}.{domain}")
}

/// The value of a custom domain's ownership record:
/// `ctrl-domain-verify={token}`.
pub fn ownership_txt_value(token: &str) -> String {
    format!("{OWNERSHIP_TXT_PREFIX}{token}")
}

/// Whether `domain` is a zone apex (a registrable domain such as
/// `example.com` or `shop.co.uk`, by the public suffix list), which cannot
/// carry a CNAME: it points A/AAAA records at the edge instead.
pub fn is_apex(domain: &str) -> bool {
    psl::domain_str(domain).is_some_and(|d| d.eq_ignore_ascii_case(domain))
}

/// Length of the hash in shortened or lossy labels (31 bits).
const HASH_LEN: usize = 6;
/// Length of the hash in owner fallbacks (41 bits).
const OWNER_HASH_LEN: usize = 8;

/// Generates the hostnames of a deployment, in the table's order.
pub fn generate_hosts(i: &HostInputs<'_>) -> Result<Vec<GeneratedHost>, HostError> {
    for (what, slug) in [
        ("workspace", i.workspace_slug),
        ("project", i.project_slug),
        ("app", i.app_slug),
        ("environment", i.environment_slug),
    ] {
        names::validate_slug(slug).map_err(|e| HostError(format!("{what} slug {slug:?} {e}")))?;
    }
    if !names::is_hostname(i.apex) || i.apex.len() > MAX_APEX_LEN {
        return Err(HostError(format!(
            "apex domain {:?} must be a lowercase hostname of at most {} characters",
            i.apex, MAX_APEX_LEN
        )));
    }

    let mut prefix = i.project_slug.to_owned();
    if i.app_slug != "default" {
        prefix.push('-');
        prefix.push_str(i.app_slug);
    }
    if let Some(owner) = i.fork_owner.filter(|o| !o.is_empty()) {
        // GitHub logins are case-insensitive: lowercasing loses nothing.
        let slug = sluggify(owner, 39);
        prefix.push_str("-fork-");
        if slug.slug == owner.to_ascii_lowercase() {
            prefix.push_str(&slug.slug);
        } else {
            prefix.push_str(&format!(
                "{}-{}",
                slug.slug,
                short_hash(&["fork", owner], HASH_LEN)
            ));
        }
    }
    let prefix = prefix.replace("--", "-");
    let ws = i.workspace_slug;
    let env_id = i.environment_id.to_owned();
    let mut hosts = Vec::new();
    let mut push = |parts: Vec<String>, lossy: Option<&str>, sticky: Sticky, owner: RouteOwner| {
        let label = fit_label(&parts, ws, lossy);
        let fallback_hash = short_hash(&owner.hash_parts(), OWNER_HASH_LEN);
        let fallback = fit_label(&parts, ws, Some(&fallback_hash));
        hosts.push(GeneratedHost {
            fqdn: format!("{label}.{}", i.apex),
            fallback_fqdn: format!("{fallback}.{}", i.apex),
            sticky,
            owner,
        });
    };

    let deployment_label = sluggify(i.deployment_id, MAX_LABEL_LEN).slug;
    if let Some(sha) = i.git_commit_sha.filter(|s| !s.is_empty()) {
        let first7: String = sha.chars().take(7).collect();
        let short = sluggify(&first7, 7).slug;
        let mut parts = vec![prefix.clone(), "git".into(), short.clone()];
        if i.unique_commit_host {
            let tail: Vec<char> = deployment_label.chars().rev().take(4).collect();
            parts.push(tail.into_iter().rev().collect());
        }
        let lossy = (short != first7).then(|| short_hash(&["sha", sha], HASH_LEN));
        push(
            parts,
            lossy.as_deref(),
            Sticky::None,
            RouteOwner::Commit {
                environment_id: env_id.clone(),
                sha: sha.to_owned(),
                deployment_id: i.unique_commit_host.then(|| i.deployment_id.to_owned()),
            },
        );
    }
    if let Some(branch) = i.git_branch.filter(|b| !b.is_empty()) {
        let slug = sluggify(branch, MAX_LABEL_LEN);
        let lossy = (!slug.lossless).then(|| short_hash(&["branch", branch], HASH_LEN));
        let mut parts = vec![prefix.clone(), "git".into()];
        if !slug.slug.is_empty() {
            parts.push(slug.slug);
        }
        push(
            parts,
            lossy.as_deref(),
            Sticky::Branch,
            RouteOwner::Branch {
                environment_id: env_id.clone(),
                branch: branch.to_owned(),
            },
        );
    }
    push(
        vec![prefix.clone(), i.environment_slug.to_owned()],
        None,
        Sticky::Environment,
        RouteOwner::Environment {
            environment_id: env_id.clone(),
        },
    );
    if i.is_production {
        push(
            vec![prefix.clone()],
            None,
            Sticky::Live,
            RouteOwner::Live {
                environment_id: env_id,
            },
        );
    }
    push(
        vec![prefix, deployment_label],
        None,
        Sticky::Deployment,
        RouteOwner::Deployment {
            deployment_id: i.deployment_id.to_owned(),
        },
    );
    Ok(hosts)
}

/// `{parts…}-{ws}`, or, when a hash is given or the label would be too long,
/// `{parts… shortened}-{hash}-{ws}`; always a valid DNS label.
fn fit_label(parts: &[String], ws: &str, hash: Option<&str>) -> String {
    let head = parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join("-");
    if hash.is_none() && head.len() + 1 + ws.len() <= MAX_LABEL_LEN {
        return format!("{head}-{ws}");
    }
    let full = format!("{head}-{ws}");
    let hash = hash.map_or_else(|| short_hash(&["label", &full], HASH_LEN), str::to_owned);
    let budget = MAX_LABEL_LEN - ws.len() - hash.len() - 2;
    let mut head = head;
    head.truncate(budget);
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        format!("{hash}-{ws}")
    } else {
        format!("{head}-{hash}-{ws}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn inputs<'a>() -> HostInputs<'a> {
        HostInputs {
            apex: "unkey.app",
            workspace_slug: "acme",
            project_slug: "shop",
            app_slug: "default",
            environment_slug: "production",
            environment_id: "env_0000000000000001",
            is_production: true,
            deployment_id: "d_0abc123xyz45678q",
            git_commit_sha: Some("abc1234def5678901234567890123456789abcde"),
            git_branch: Some("main"),
            fork_owner: None,
            unique_commit_host: false,
        }
    }

    fn fqdns(i: &HostInputs<'_>) -> Vec<(String, Sticky)> {
        generate_hosts(i)
            .unwrap()
            .into_iter()
            .map(|h| (h.fqdn, h.sticky))
            .collect()
    }

    #[test]
    fn the_reference_example() {
        assert_eq!(
            fqdns(&inputs()),
            [
                ("shop-git-abc1234-acme.unkey.app".into(), Sticky::None),
                ("shop-git-main-acme.unkey.app".into(), Sticky::Branch),
                ("shop-production-acme.unkey.app".into(), Sticky::Environment),
                ("shop-acme.unkey.app".into(), Sticky::Live),
                (
                    "shop-d-0abc123xyz45678q-acme.unkey.app".into(),
                    Sticky::Deployment
                ),
            ]
        );
    }

    #[test]
    fn cli_deploys_get_a_deterministic_commit_suffix() {
        let i = HostInputs {
            unique_commit_host: true,
            ..inputs()
        };
        assert_eq!(fqdns(&i)[0].0, "shop-git-abc1234-678q-acme.unkey.app");
        assert_eq!(fqdns(&i), fqdns(&i));
    }

    #[test]
    fn preview_has_no_live_host_and_named_apps_are_in_the_prefix() {
        let i = HostInputs {
            is_production: false,
            environment_slug: "preview",
            app_slug: "api",
            ..inputs()
        };
        let hosts = fqdns(&i);
        assert!(hosts.iter().all(|(_, s)| *s != Sticky::Live));
        assert!(
            hosts
                .iter()
                .any(|(h, _)| h == "shop-api-preview-acme.unkey.app")
        );
        assert!(
            hosts
                .iter()
                .any(|(h, _)| h == "shop-api-git-main-acme.unkey.app")
        );
    }

    #[test]
    fn without_git_only_environment_live_and_deployment_hosts() {
        let i = HostInputs {
            git_commit_sha: None,
            git_branch: Some(""),
            ..inputs()
        };
        let stickies: Vec<_> = fqdns(&i).into_iter().map(|(_, s)| s).collect();
        assert_eq!(
            stickies,
            [Sticky::Environment, Sticky::Live, Sticky::Deployment]
        );
    }

    #[test]
    fn forks_are_marked() {
        let i = HostInputs {
            fork_owner: Some("Some-User"),
            ..inputs()
        };
        assert_eq!(
            fqdns(&i)[1].0,
            "shop-fork-some-user-git-main-acme.unkey.app"
        );
        let odd = HostInputs {
            fork_owner: Some("user_x"),
            ..inputs()
        };
        let host = &fqdns(&odd)[1].0;
        assert!(
            host.starts_with("shop-fork-user-x-") && host.ends_with("-git-main-acme.unkey.app"),
            "{host}"
        );
    }

    fn branch_host(branch: &str) -> String {
        let i = HostInputs {
            git_branch: Some(branch),
            ..inputs()
        };
        generate_hosts(&i)
            .unwrap()
            .into_iter()
            .find(|h| h.sticky == Sticky::Branch)
            .unwrap()
            .fqdn
    }

    #[test]
    fn lossy_branches_carry_a_hash_of_their_exact_name() {
        let slash = branch_host("feat/login");
        let dash = branch_host("feat-login");
        let under = branch_host("feat_login");
        let upper = branch_host("Feat-Login");
        assert_eq!(dash, "shop-git-feat-login-acme.unkey.app");
        for other in [&slash, &under, &upper] {
            assert_ne!(other, &dash);
            assert!(
                other.starts_with("shop-git-feat-login-") && other.ends_with("-acme.unkey.app"),
                "{other}"
            );
        }
        assert_ne!(
            slash, under,
            "branches differing only in punctuation stay distinct"
        );
    }

    #[test]
    fn odd_branches_still_give_valid_hosts() {
        for branch in [
            "/fix",
            "日本語",
            "fëature/ünïcode",
            "123-starts-with-digits",
            "-",
            "a".repeat(300).as_str(),
            "release/2026.11/hotfix--urgent!!",
            "UPPER",
        ] {
            let host = branch_host(branch);
            assert!(names::is_hostname(&host), "{branch:?} -> {host}");
        }
        assert_ne!(branch_host("日本語"), branch_host("中文"));
        assert_ne!(branch_host(&"a".repeat(300)), branch_host(&"a".repeat(301)));
    }

    #[test]
    fn long_slugs_are_shortened_with_a_hash_and_keep_the_workspace_last() {
        let long = "p".repeat(32);
        let i = HostInputs {
            project_slug: &long,
            app_slug: &long,
            workspace_slug: "w23456789012345678901234567890ab",
            ..inputs()
        };
        for h in generate_hosts(&i).unwrap() {
            let label = h.fqdn.split('.').next().unwrap();
            assert!(label.len() <= 63 && names::is_dns_label(label), "{label}");
            assert!(
                label.ends_with("-w23456789012345678901234567890ab"),
                "{label}"
            );
        }
    }

    #[test]
    fn fallbacks_differ_from_readable_names_and_between_owners() {
        // project "a-b" in workspace "c" vs project "a" in workspace "b-c":
        // the readable live hosts clash, the fallbacks do not.
        let one = HostInputs {
            project_slug: "a-b",
            workspace_slug: "c",
            environment_id: "env_1",
            ..inputs()
        };
        let two = HostInputs {
            project_slug: "a",
            workspace_slug: "b-c",
            environment_id: "env_2",
            ..inputs()
        };
        let live = |i: &HostInputs<'_>| {
            generate_hosts(i)
                .unwrap()
                .into_iter()
                .find(|h| h.sticky == Sticky::Live)
                .unwrap()
        };
        let (a, b) = (live(&one), live(&two));
        assert_eq!(a.fqdn, b.fqdn);
        assert_ne!(a.fallback_fqdn, b.fallback_fqdn);
        assert_ne!(a.fallback_fqdn, a.fqdn);
        assert_ne!(a.owner, b.owner);
    }

    #[test]
    fn bad_inputs_are_rejected_with_a_reason() {
        let bad_ws = HostInputs {
            workspace_slug: "Acme",
            ..inputs()
        };
        assert!(
            generate_hosts(&bad_ws)
                .unwrap_err()
                .to_string()
                .contains("workspace slug")
        );
        let bad_apex = HostInputs {
            apex: "Unkey.App.",
            ..inputs()
        };
        assert!(
            generate_hosts(&bad_apex)
                .unwrap_err()
                .to_string()
                .contains("apex")
        );
    }

    #[test]
    fn a_route_belongs_to_an_owner_only_with_matching_kind_and_identity() {
        let route = |sticky, deployment_id, sha, branch| ExistingRoute {
            environment_id: "env_a",
            sticky,
            deployment_id,
            git_commit_sha: sha,
            git_branch: branch,
        };
        let commit = RouteOwner::Commit {
            environment_id: "env_a".into(),
            sha: "abc".into(),
            deployment_id: None,
        };
        assert!(commit.owns(&route(Sticky::None, "d_1", Some("abc"), None)));
        assert!(!commit.owns(&route(Sticky::None, "d_1", Some("abd"), None)));
        assert!(!commit.owns(&route(Sticky::Branch, "d_1", Some("abc"), None)));
        let cli_commit = RouteOwner::Commit {
            environment_id: "env_a".into(),
            sha: "abc".into(),
            deployment_id: Some("d_2".into()),
        };
        assert!(!cli_commit.owns(&route(Sticky::None, "d_1", Some("abc"), None)));
        assert!(cli_commit.owns(&route(Sticky::None, "d_2", Some("abc"), None)));
        let branch = RouteOwner::Branch {
            environment_id: "env_a".into(),
            branch: "feat/x".into(),
        };
        assert!(branch.owns(&route(Sticky::Branch, "d_1", None, Some("feat/x"))));
        // "feat-x" shortens to the same label but is another branch.
        assert!(!branch.owns(&route(Sticky::Branch, "d_1", None, Some("feat-x"))));
        let other_env = RouteOwner::Environment {
            environment_id: "env_b".into(),
        };
        assert!(!other_env.owns(&route(Sticky::Environment, "d_1", None, None)));
        let live = RouteOwner::Live {
            environment_id: "env_a".into(),
        };
        assert!(live.owns(&route(Sticky::Live, "d_1", None, None)));
        assert!(!live.owns(&route(Sticky::Environment, "d_1", None, None)));
        let own = RouteOwner::Deployment {
            deployment_id: "d_1".into(),
        };
        assert!(own.owns(&route(Sticky::Deployment, "d_1", None, None)));
        assert!(!own.owns(&route(Sticky::Deployment, "d_2", None, None)));
    }

    #[test]
    fn sticky_names_round_trip() {
        for s in Sticky::ALL {
            assert_eq!(s.as_str().parse::<Sticky>(), Ok(s));
        }
    }

    proptest! {
        #[test]
        fn every_host_is_a_valid_hostname(
            branch in "\\PC{0,300}",
            sha in "[0-9a-f]{40}|\\PC{0,10}",
            owner in proptest::option::of("[A-Za-z0-9_.-]{1,40}"),
            project in "[a-z][a-z0-9]{0,31}",
            ws in "[a-z][a-z0-9]{0,31}",
            cli in any::<bool>(),
        ) {
            let i = HostInputs {
                project_slug: &project,
                workspace_slug: &ws,
                git_branch: Some(&branch),
                git_commit_sha: Some(&sha),
                fork_owner: owner.as_deref(),
                unique_commit_host: cli,
                ..inputs()
            };
            let hosts = generate_hosts(&i).unwrap();
            let again = generate_hosts(&i).unwrap();
            prop_assert_eq!(&hosts, &again);
            let mut seen = HashSet::new();
            for h in &hosts {
                prop_assert!(names::is_hostname(&h.fqdn), "{}", h.fqdn);
                prop_assert!(names::is_hostname(&h.fallback_fqdn), "{}", h.fallback_fqdn);
                prop_assert!(!h.fqdn.contains("--"), "{}", h.fqdn);
                prop_assert!(seen.insert(h.fqdn.clone()), "duplicate {}", h.fqdn);
            }
        }

        #[test]
        fn distinct_branches_get_distinct_hosts(a in "\\PC{1,80}", b in "\\PC{1,80}") {
            prop_assume!(a != b);
            prop_assert_ne!(branch_host(&a), branch_host(&b));
        }
    }
    #[test]
    fn custom_domains_are_normalized_or_refused_by_name() {
        let platform = ["ctrl.example.com", "edge.example.net"];
        assert_eq!(
            normalize_custom_domain("Shop.Example.COM.", &platform).unwrap(),
            "shop.example.com"
        );
        for (bad, says) in [
            ("*.example.com", "wildcard"),
            ("10.0.0.1", "IP address"),
            ("localhost", "not a valid hostname"),
            ("bad_label.example.com", "not a valid hostname"),
            ("a.ctrl.example.com", "platform's own domain"),
            ("ctrl.example.com", "platform's own domain"),
            ("x.edge.example.net", "platform's own domain"),
            ("example.123", "numeric"),
        ] {
            let err = normalize_custom_domain(bad, &platform)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let long = format!("{}.com", "a".repeat(250));
        assert!(normalize_custom_domain(&long, &platform).is_err());
    }

    #[test]
    fn apexes_follow_the_public_suffix_list() {
        assert!(is_apex("example.com"));
        assert!(is_apex("shop.co.uk"));
        assert!(!is_apex("www.example.com"));
        assert!(!is_apex("www.shop.co.uk"));
        assert!(is_apex("customer.test"));
        assert!(!is_apex("app.customer.test"));
    }

    #[test]
    fn ownership_records_are_named_once() {
        assert_eq!(
            ownership_txt_name("shop.example.com"),
            "_ctrl.shop.example.com"
        );
        assert_eq!(ownership_txt_value("abc"), "ctrl-domain-verify=abc");
    }

    #[test]
    fn each_ca_gets_its_own_account_owner() {
        let staging = acme_account_owner("https://acme-staging-v02.api.letsencrypt.org/directory");
        let production = acme_account_owner("https://acme-v02.api.letsencrypt.org/directory");
        assert_ne!(staging, production);
        assert!(
            staging.starts_with("ctrl_platform:") && staging.len() <= 48,
            "{staging}"
        );
        assert_eq!(
            staging,
            acme_account_owner("https://acme-staging-v02.api.letsencrypt.org/directory")
        );
    }
}
