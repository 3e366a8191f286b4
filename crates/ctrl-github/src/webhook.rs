//! GitHub App webhooks: the signature check and the events ctrl acts on,
//! read from GitHub's payloads into small typed [`Event`]s (what crosses
//! into the worker's durable handler; a payload can be megabytes).
//!
//! The signature (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the
//! body>`) is checked in constant time before anything else is read.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event name header (`push`, `pull_request`, …).
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery id header (a UUID; the same on redeliveries).
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// GitHub caps payloads at 25 MB.
pub const MAX_PAYLOAD_BYTES: usize = 25 << 20;
/// Changed files kept per push (for watch paths); more mark the list
/// incomplete.
pub const MAX_CHANGED_FILES: usize = 3000;

/// Why a delivery is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// No `X-Hub-Signature-256`.
    #[error("the delivery is not signed (X-Hub-Signature-256 is missing)")]
    Unsigned,
    /// A signature that does not match the body under any configured secret.
    #[error("the signature does not match the body (X-Hub-Signature-256)")]
    BadSignature,
    /// A header is missing or malformed.
    #[error("header {header}: {problem}")]
    Header {
        /// The header.
        header: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The payload is not what GitHub sends for the event.
    #[error("the {event} payload is malformed: {message}")]
    Payload {
        /// The event.
        event: String,
        /// What is wrong, as serde says it.
        message: String,
    },
}

/// The `X-Hub-Signature-256` value for `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    )
}

/// Checks `signature` (the header's value) against `body` under each of
/// `secrets` (several while one is rotated), in constant time.
pub fn verify(secrets: &[&str], signature: Option<&str>, body: &[u8]) -> Result<(), WebhookError> {
    let signature = signature.ok_or(WebhookError::Unsigned)?;
    let tag = signature
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(WebhookError::BadSignature)?;
    let matches = secrets.iter().any(|secret| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, body, &tag).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// Checks the delivery id header: GitHub's are UUIDs.
pub fn delivery_id(value: Option<&str>) -> Result<&str, WebhookError> {
    let id = value.ok_or(WebhookError::Header {
        header: DELIVERY_HEADER,
        problem: "missing",
    })?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(WebhookError::Header {
            header: DELIVERY_HEADER,
            problem: "must be a delivery id (letters, digits and dashes, at most 64)",
        });
    }
    Ok(id)
}

/// A repository as webhooks name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    /// GitHub's id (kept across renames).
    pub id: i64,
    /// "owner/repo".
    pub full_name: String,
    /// Its default branch.
    #[serde(default)]
    pub default_branch: String,
}

/// A commit's metadata from a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadCommit {
    /// The message.
    pub message: String,
    /// The author's GitHub login, else name.
    pub author: String,
    /// Unix ms.
    pub timestamp_ms: i64,
}

/// A push to a branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The installation it came through.
    pub installation_id: i64,
    /// The repository.
    pub repository: Repository,
    /// The branch (without `refs/heads/`).
    pub branch: String,
    /// The new head commit (zeros when the branch was deleted).
    pub after: String,
    /// The branch was deleted.
    pub deleted: bool,
    /// The head commit's metadata.
    pub head_commit: Option<HeadCommit>,
    /// Files added, modified or removed by the pushed commits.
    pub changed_files: BTreeSet<String>,
    /// Whether `changed_files` is the whole list (GitHub lists at most 20
    /// commits per push; ctrl keeps at most [`MAX_CHANGED_FILES`]).
    pub changed_files_complete: bool,
    /// Who pushed.
    pub sender: String,
}

/// What happened to a pull request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullRequestAction {
    /// Opened or reopened: deploy its head.
    Opened,
    /// New commits: deploy its new head.
    Synchronize,
    /// Closed (merged or not): stop its previews.
    Closed,
}

/// A pull request event ctrl acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The installation it came through.
    pub installation_id: i64,
    /// The base repository (the connected one).
    pub repository: Repository,
    /// What happened.
    pub action: PullRequestAction,
    /// Its number.
    pub number: u32,
    /// Its title.
    pub title: String,
    /// The head commit.
    pub head_sha: String,
    /// The head branch (in the head repository).
    pub head_branch: String,
    /// "owner/repo" of the head repository when it is a fork.
    pub fork: Option<String>,
    /// Who opened or updated it.
    pub sender: String,
}

/// An event ctrl acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// GitHub checking the hook.
    Ping,
    /// A push to a branch.
    Push(Push),
    /// A pull request opened, updated or closed.
    PullRequest(PullRequest),
    /// The app was uninstalled (or suspended): its connections go.
    InstallationRemoved {
        /// The installation.
        installation_id: i64,
    },
    /// Repositories were removed from an installation.
    RepositoriesRemoved {
        /// The installation.
        installation_id: i64,
        /// The repositories (GitHub id, "owner/repo").
        repositories: Vec<(i64, String)>,
    },
}

impl Event {
    /// The installation the event came through, if any.
    pub fn installation_id(&self) -> Option<i64> {
        match self {
            Self::Ping => None,
            Self::Push(p) => Some(p.installation_id),
            Self::PullRequest(p) => Some(p.installation_id),
            Self::InstallationRemoved { installation_id }
            | Self::RepositoriesRemoved {
                installation_id, ..
            } => Some(*installation_id),
        }
    }

    /// The repository it is about, if one.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            Self::Push(p) => Some(&p.repository),
            Self::PullRequest(p) => Some(&p.repository),
            _ => None,
        }
    }
}

/// A delivery handed to the worker's `GitHubWebhook` handler (keyed by
/// [`Delivery::key`], so one repository's deliveries run in order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `X-GitHub-Delivery` (also the invocation's idempotency key).
    pub delivery_id: String,
    /// What happened.
    pub event: Event,
}

impl Delivery {
    /// `{installation}` or `{installation}:{repository id}` (GitHub's ids:
    /// stable across renames, and safe in a URL path).
    pub fn key(&self) -> String {
        let installation = self.event.installation_id().unwrap_or_default();
        match self.event.repository() {
            Some(r) => format!("{installation}:{}", r.id),
            None => installation.to_string(),
        }
    }
}

/// Reads a delivery of `event`: `Ok(None)` for what ctrl ignores (other
/// events and actions, tag pushes), an error naming the problem for a
/// payload that is not what GitHub sends.
pub fn parse(event: &str, body: &[u8]) -> Result<Option<Event>, WebhookError> {
    let malformed = |e: serde_json::Error| WebhookError::Payload {
        event: event.to_owned(),
        message: e.to_string(),
    };
    match event {
        "ping" => Ok(Some(Event::Ping)),
        "push" => {
            let p: wire::Push = serde_json::from_slice(body).map_err(malformed)?;
            Ok(push(p))
        }
        "pull_request" => {
            let p: wire::PullRequestEvent = serde_json::from_slice(body).map_err(malformed)?;
            Ok(pull_request(p))
        }
        "installation" => {
            let p: wire::InstallationEvent = serde_json::from_slice(body).map_err(malformed)?;
            Ok(
                matches!(p.action.as_str(), "deleted" | "suspend").then_some(
                    Event::InstallationRemoved {
                        installation_id: p.installation.id,
                    },
                ),
            )
        }
        "installation_repositories" => {
            let p: wire::InstallationRepositoriesEvent =
                serde_json::from_slice(body).map_err(malformed)?;
            Ok(
                (p.action == "removed" && !p.repositories_removed.is_empty()).then(|| {
                    Event::RepositoriesRemoved {
                        installation_id: p.installation.id,
                        repositories: p
                            .repositories_removed
                            .into_iter()
                            .map(|r| (r.id, r.full_name))
                            .collect(),
                    }
                }),
            )
        }
        _ => Ok(None),
    }
}

fn push(p: wire::Push) -> Option<Event> {
    let branch = p.r#ref.strip_prefix("refs/heads/")?.to_owned();
    let installation_id = p.installation?.id;
    let mut changed_files = BTreeSet::new();
    let mut complete = p.commits.len() < 20;
    for c in &p.commits {
        for f in c.added.iter().chain(&c.modified).chain(&c.removed) {
            if changed_files.len() >= MAX_CHANGED_FILES {
                complete = false;
                break;
            }
            changed_files.insert(f.clone());
        }
    }
    let head_commit = p.head_commit.map(|c| HeadCommit {
        author: c
            .author
            .username
            .filter(|u| !u.is_empty())
            .unwrap_or(c.author.name),
        timestamp_ms: parse_rfc3339_ms(&c.timestamp).unwrap_or(0),
        message: c.message,
    });
    Some(Event::Push(Push {
        installation_id,
        repository: p.repository.into(),
        branch,
        after: p.after,
        deleted: p.deleted,
        head_commit,
        changed_files,
        changed_files_complete: complete,
        sender: p.sender.login,
    }))
}

fn pull_request(p: wire::PullRequestEvent) -> Option<Event> {
    let action = match p.action.as_str() {
        "opened" | "reopened" => PullRequestAction::Opened,
        "synchronize" => PullRequestAction::Synchronize,
        "closed" => PullRequestAction::Closed,
        _ => return None,
    };
    let installation_id = p.installation?.id;
    let pr = p.pull_request;
    let head_repo = pr.head.repo.map(|r| r.full_name);
    let fork = head_repo.filter(|h| !h.eq_ignore_ascii_case(&p.repository.full_name));
    Some(Event::PullRequest(PullRequest {
        installation_id,
        repository: p.repository.into(),
        action,
        number: pr.number,
        title: pr.title,
        head_sha: pr.head.sha,
        head_branch: pr.head.r#ref,
        fork,
        sender: p.sender.login,
    }))
}

/// `2024-02-29T12:00:00Z` or with an offset (`+01:00`) → unix ms.
fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec = t.next()?.split('.').next()?.parse::<i64>().ok()?;
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + sec - offset_secs) * 1000)
}

/// GitHub's payload shapes (only the fields ctrl reads).
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub(super) struct Installation {
        pub(super) id: i64,
    }

    #[derive(Deserialize)]
    pub(super) struct Account {
        pub(super) login: String,
    }

    #[derive(Deserialize)]
    pub(super) struct Repository {
        pub(super) id: i64,
        pub(super) full_name: String,
        #[serde(default)]
        pub(super) default_branch: Option<String>,
    }

    impl From<Repository> for super::Repository {
        fn from(r: Repository) -> Self {
            Self {
                id: r.id,
                full_name: r.full_name,
                default_branch: r.default_branch.unwrap_or_default(),
            }
        }
    }

    #[derive(Deserialize)]
    pub(super) struct CommitAuthor {
        #[serde(default)]
        pub(super) name: String,
        #[serde(default)]
        pub(super) username: Option<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct Commit {
        #[serde(default)]
        pub(super) message: String,
        #[serde(default)]
        pub(super) timestamp: String,
        pub(super) author: CommitAuthor,
        #[serde(default)]
        pub(super) added: Vec<String>,
        #[serde(default)]
        pub(super) removed: Vec<String>,
        #[serde(default)]
        pub(super) modified: Vec<String>,
    }

    #[derive(Deserialize)]
    pub(super) struct Push {
        pub(super) r#ref: String,
        pub(super) after: String,
        #[serde(default)]
        pub(super) deleted: bool,
        #[serde(default)]
        pub(super) commits: Vec<Commit>,
        pub(super) head_commit: Option<Commit>,
        pub(super) repository: Repository,
        pub(super) sender: Account,
        pub(super) installation: Option<Installation>,
    }

    #[derive(Deserialize)]
    pub(super) struct Ref {
        pub(super) r#ref: String,
        pub(super) sha: String,
        pub(super) repo: Option<Repository>,
    }

    #[derive(Deserialize)]
    pub(super) struct PullRequest {
        pub(super) number: u32,
        #[serde(default)]
        pub(super) title: String,
        pub(super) head: Ref,
    }

    #[derive(Deserialize)]
    pub(super) struct PullRequestEvent {
        pub(super) action: String,
        pub(super) pull_request: PullRequest,
        pub(super) repository: Repository,
        pub(super) sender: Account,
        pub(super) installation: Option<Installation>,
    }

    #[derive(Deserialize)]
    pub(super) struct InstallationEvent {
        pub(super) action: String,
        pub(super) installation: Installation,
    }

    #[derive(Deserialize)]
    pub(super) struct RemovedRepository {
        pub(super) id: i64,
        pub(super) full_name: String,
    }

    #[derive(Deserialize)]
    pub(super) struct InstallationRepositoriesEvent {
        pub(super) action: String,
        pub(super) installation: Installation,
        #[serde(default)]
        pub(super) repositories_removed: Vec<RemovedRepository>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked_against_every_secret() {
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let sig = sign("old", body);
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert_eq!(verify(&["new", "old"], Some(&sig), body), Ok(()));
        assert_eq!(
            verify(&["new"], Some(&sig), body),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(&["old"], Some(&sig), b"tampered"),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(verify(&["old"], None, body), Err(WebhookError::Unsigned));
        for bad in ["sha1=00", "sha256=zz", "sha256=abc", ""] {
            assert_eq!(
                verify(&["old"], Some(bad), body),
                Err(WebhookError::BadSignature),
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_with_offsets_are_read() {
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T01:00:00+01:00"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn delivery_ids_are_checked() {
        assert!(delivery_id(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")).is_ok());
        assert!(delivery_id(None).is_err());
        assert!(delivery_id(Some("a b")).is_err());
        assert!(delivery_id(Some(&"a".repeat(65))).is_err());
    }

    #[test]
    fn tag_pushes_and_other_events_are_ignored_and_bad_payloads_named() {
        let tag = br#"{"ref":"refs/tags/v1","after":"a","repository":{"id":1,"full_name":"o/r"},"sender":{"login":"u"},"installation":{"id":5}}"#;
        assert_eq!(parse("push", tag), Ok(None));
        assert_eq!(parse("issues", b"{}"), Ok(None));
        let err = parse("push", br#"{"ref":5}"#).unwrap_err();
        assert!(
            err.to_string().contains("push payload is malformed"),
            "{err}"
        );
    }
}
