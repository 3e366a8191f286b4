//! The Docker backend against a real podman (Docker-compatible API).

mod support;

mod health;
mod lifecycle;
mod operations;
mod rollout;
mod unsupported;
