//! The Docker backend against a real podman (Docker-compatible API), and
//! the Kubernetes backend against the testkit's fake API server.

mod support;

mod health;
mod kubernetes;
mod lifecycle;
mod operations;
mod rollout;
mod unsupported;
