//! Every query of ctrl-db against a real MariaDB (a fresh, migrated
//! database per test, from ctrl-testkit).

mod certificate;
mod cluster;
mod deployment;
mod edge;
mod fixtures;
mod instance;
mod migrations;
mod route;
mod settings;
mod tenancy;
mod topology;
