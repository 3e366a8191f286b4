//! ctrl's GitHub client: what the worker needs to build a deployment from a
//! GitHub repository.
//!
//! A [`GitHub`] authenticates as a GitHub App — it signs the app's RS256 JSON
//! web token itself with `ring` ([`app`]) and trades it for installation
//! tokens, cached until five minutes before they expire — and reads
//! repositories ([`repos`]): it resolves a branch, the default branch or a
//! pinned commit to a [`Commit`] and downloads the tarball of a commit,
//! refusing more than a configured number of bytes. Public repositories can
//! be read without an installation when the configuration allows it. It
//! also reports back to repositories ([`status`]), always with an
//! installation: deployments and their statuses, commit statuses, and the
//! comment ctrl keeps on a pull request.
//!
//! HTTP goes through octocrab's client (rustls with ring, its timeouts and
//! redirect handling); every request also has an overall deadline. Errors
//! ([`GitHubError`]) say what the user can do about them, name the input or
//! configuration field at fault, tell whether trying again can help
//! ([`GitHubError::is_transient`]) and never contain a key or a token.
//!
//! Only these endpoints are used:
//!
//! - `POST /app/installations/{id}/access_tokens`;
//! - `GET /repos/{owner}/{repo}`, `GET /repos/{owner}/{repo}/commits/{ref}`
//!   and `GET /repos/{owner}/{repo}/tarball/{sha}` (and the codeload URL it
//!   redirects to);
//! - `POST /repos/{owner}/{repo}/deployments` and
//!   `POST /repos/{owner}/{repo}/deployments/{id}/statuses`;
//! - `POST /repos/{owner}/{repo}/statuses/{sha}`;
//! - `GET` and `POST /repos/{owner}/{repo}/issues/{number}/comments` and
//!   `PATCH /repos/{owner}/{repo}/issues/comments/{id}`.
//!
//! `ctrl_testkit::github::FakeGitHub` serves the same endpoints for tests.
//!
//! [`webhook`] (no feature needed: ctrl-api links it without the client)
//! checks deliveries' signatures and reads the events ctrl acts on.

#[cfg(feature = "client")]
pub mod app;
#[cfg(feature = "client")]
pub mod repos;
#[cfg(feature = "client")]
pub mod status;
pub mod webhook;

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod error;
#[cfg(feature = "client")]
mod time;

#[cfg(feature = "client")]
pub use app::Token;
#[cfg(feature = "client")]
pub use client::{DEFAULT_API_URL, GitHub, GitHubConfig};
#[cfg(feature = "client")]
pub use error::GitHubError;
#[cfg(feature = "client")]
pub use repos::{Commit, RepoRef, Want};
#[cfg(feature = "client")]
pub use status::{CommitState, CommitStatus, DeploymentState, DeploymentStatus, NewDeployment};
