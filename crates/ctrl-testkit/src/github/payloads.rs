//! GitHub's webhook payloads as GitHub sends them (the fields ctrl reads,
//! and others around them), for deliveries a test, a benchmark or
//! `cargo xtask github push` signs and posts to ctrl-api's
//! `/webhooks/github`.

use serde_json::{Value, json};

use crate::clock::rfc3339;

/// The SHA GitHub sends for "no commit" (`before` of a new branch, `after`
/// of a deleted one).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// The repository a delivery is about, and the installation it comes
/// through.
#[derive(Debug, Clone, Copy)]
pub struct Repository<'a> {
    /// GitHub's id (kept across renames).
    pub id: u64,
    /// `owner/name`.
    pub full_name: &'a str,
    /// Whether it is private.
    pub private: bool,
    /// Its default branch.
    pub default_branch: &'a str,
    /// The GitHub App installation the delivery comes through.
    pub installation_id: u64,
}

impl Repository<'_> {
    fn owner(&self) -> &str {
        self.full_name
            .split_once('/')
            .map_or(self.full_name, |(owner, _)| owner)
    }

    /// The `repository` object of a payload.
    pub fn json(&self) -> Value {
        let name = self
            .full_name
            .split_once('/')
            .map_or(self.full_name, |(_, name)| name);
        json!({
            "id": self.id,
            "node_id": "R_kgDOxyz",
            "name": name,
            "full_name": self.full_name,
            "private": self.private,
            "owner": { "login": self.owner(), "id": 1, "type": "Organization" },
            "html_url": format!("https://github.com/{}", self.full_name),
            "default_branch": self.default_branch,
            "fork": false
        })
    }

    fn installation(&self) -> Value {
        json!({ "id": self.installation_id, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uNzc=" })
    }
}

/// The pushed head commit, as a push payload lists it.
#[derive(Debug, Clone, Copy)]
pub struct PushedCommit<'a> {
    /// Its SHA (the push's `after`).
    pub sha: &'a str,
    /// Its message.
    pub message: &'a str,
    /// The author's GitHub login (also the pusher and sender).
    pub author: &'a str,
    /// The author's name.
    pub author_name: &'a str,
    /// The author's email.
    pub author_email: &'a str,
    /// The commit time, unix seconds.
    pub timestamp: i64,
    /// Paths it added.
    pub added: &'a [&'a str],
    /// Paths it modified.
    pub modified: &'a [&'a str],
    /// Paths it removed.
    pub removed: &'a [&'a str],
}

/// A `push` event to `branch`: from `before` (or [`ZERO_SHA`] for a new
/// branch) to `head`, or the branch deleted when `head` is `None`.
pub fn push(
    repo: &Repository<'_>,
    branch: &str,
    before: &str,
    head: Option<&PushedCommit<'_>>,
) -> Value {
    let full_name = repo.full_name;
    let after = head.map_or(ZERO_SHA, |c| c.sha);
    let commit = head.map(|c| {
        json!({
            "id": c.sha,
            "tree_id": ZERO_SHA,
            "distinct": true,
            "message": c.message,
            "timestamp": rfc3339(c.timestamp),
            "url": format!("https://github.com/{full_name}/commit/{}", c.sha),
            "author": { "name": c.author_name, "email": c.author_email, "username": c.author },
            "committer": { "name": "GitHub", "email": "noreply@github.com", "username": "web-flow" },
            "added": c.added,
            "removed": c.removed,
            "modified": c.modified
        })
    });
    let (pusher, email) = head.map_or(("octocat", "octocat@example.com"), |c| {
        (c.author, c.author_email)
    });
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": before == ZERO_SHA && head.is_some(),
        "deleted": head.is_none(),
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{full_name}/compare/{before}...{after}"),
        "commits": commit.iter().collect::<Vec<_>>(),
        "head_commit": commit,
        "repository": repo.json(),
        "pusher": { "name": pusher, "email": email },
        "sender": { "login": pusher, "id": 1, "type": "User" },
        "installation": repo.installation()
    })
}

/// A pull request as a `pull_request` event describes it.
#[derive(Debug, Clone, Copy)]
pub struct PullRequest<'a> {
    /// `opened`, `synchronize`, `closed`, ….
    pub action: &'a str,
    /// Its number.
    pub number: u64,
    /// Its title.
    pub title: &'a str,
    /// The head branch.
    pub branch: &'a str,
    /// The head commit.
    pub sha: &'a str,
    /// `owner/name` of the head repository: the base repository, or a fork.
    pub head_repo: &'a str,
    /// Who opened or updated it.
    pub sender: &'a str,
}

/// A `pull_request` event of `repo` (the base repository).
pub fn pull_request(repo: &Repository<'_>, pr: &PullRequest<'_>) -> Value {
    let fork = !pr.head_repo.eq_ignore_ascii_case(repo.full_name);
    let head_owner = pr.head_repo.split_once('/').map_or("", |(owner, _)| owner);
    json!({
        "action": pr.action,
        "number": pr.number,
        "pull_request": {
            "id": 1,
            "number": pr.number,
            "state": if pr.action == "closed" { "closed" } else { "open" },
            "title": pr.title,
            "user": { "login": pr.sender },
            "head": {
                "label": format!("{head_owner}:{}", pr.branch),
                "ref": pr.branch,
                "sha": pr.sha,
                "repo": {
                    "id": if fork { repo.id + 1 } else { repo.id },
                    "full_name": pr.head_repo,
                    "default_branch": repo.default_branch,
                    "fork": fork
                }
            },
            "base": {
                "label": format!("{}:{}", repo.owner(), repo.default_branch),
                "ref": repo.default_branch,
                "sha": ZERO_SHA,
                "repo": repo.json()
            },
            "merged": false
        },
        "repository": repo.json(),
        "sender": { "login": pr.sender, "id": 2, "type": "User" },
        "installation": { "id": repo.installation_id }
    })
}

/// An `installation_repositories` event: `repositories` (the `Repository`
/// values' ids and names) were `removed` from (or `added` to) the
/// installation they name, as GitHub sends it when an owner changes which
/// repositories the app may see.
pub fn installation_repositories(action: &str, repositories: &[Repository<'_>]) -> Value {
    let installation_id = repositories.first().map_or(0, |r| r.installation_id);
    let owner = repositories.first().map_or("", |r| r.owner());
    let listed: Vec<Value> = repositories
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "node_id": format!("R_{}", r.id),
                "name": r.full_name.split_once('/').map_or(r.full_name, |(_, n)| n),
                "full_name": r.full_name,
                "private": r.private,
            })
        })
        .collect();
    let (added, removed) = if action == "added" {
        (listed, Vec::new())
    } else {
        (Vec::new(), listed)
    };
    json!({
        "action": action,
        "installation": {
            "id": installation_id,
            "account": { "login": owner, "type": "Organization" },
            "repository_selection": "selected",
        },
        "repository_selection": "selected",
        "repositories_added": added,
        "repositories_removed": removed,
        "requester": null,
        "sender": { "login": format!("{owner}-admin"), "type": "User" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: Repository<'static> = Repository {
        id: 7,
        full_name: "acme/shop",
        private: true,
        default_branch: "main",
        installation_id: 77,
    };

    #[test]
    fn shapes() {
        let sha = "a".repeat(40);
        let commit = PushedCommit {
            sha: &sha,
            message: "Change it",
            author: "octocat",
            author_name: "The Octocat",
            author_email: "octocat@example.com",
            timestamp: 1_700_000_000,
            added: &["new.txt"],
            modified: &["web/index.html"],
            removed: &[],
        };
        let push = push(&REPO, "main", ZERO_SHA, Some(&commit));
        assert_eq!(push["head_commit"]["timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(push["created"], true);
        assert_eq!(push["installation"]["id"], 77);
        let deleted = super::push(&REPO, "main", &sha, None);
        assert_eq!(
            (&deleted["deleted"], &deleted["after"], &deleted["commits"]),
            (&json!(true), &json!(ZERO_SHA), &json!([]))
        );
        let pr = pull_request(
            &REPO,
            &PullRequest {
                action: "opened",
                number: 5,
                title: "t",
                branch: "nicer",
                sha: &sha,
                head_repo: "stranger/shop",
                sender: "contributor",
            },
        );
        assert_eq!(pr["pull_request"]["head"]["repo"]["fork"], true);
        assert_eq!(pr["pull_request"]["base"]["label"], "acme:main");
        assert_eq!(pr["pull_request"]["head"]["label"], "stranger:nicer");
        let removed = installation_repositories("removed", &[REPO]);
        assert_eq!(removed["installation"]["id"], 77);
        assert_eq!(
            removed["repositories_removed"][0]["full_name"],
            REPO.full_name
        );
        assert_eq!(removed["repositories_added"], json!([]));
    }
}
