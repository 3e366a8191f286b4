//! The real ctrl-worker process on a real restate-server and MariaDB.

mod build_stack;
mod builds;
mod cert_stack;
mod certificates;
mod deletion;
mod deployment_object;
mod durability;
mod github_stack;
mod harness;
mod live;
mod pipeline;
mod security;
mod truth;
mod webhooks;
