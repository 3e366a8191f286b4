//! Proof that the testkit starts real dependencies and cleans them up.
//! One integration-test binary with a module per dependency.

mod acme;
mod cleanup;
mod depot;
mod helm;
mod mariadb;
mod podman;
mod registry;
mod restate;
mod s3;
