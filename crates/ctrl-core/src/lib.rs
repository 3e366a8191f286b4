//! Pure domain logic of the ctrl control plane.
//!
//! Ids, the deployment status machine, generated domain names and the
//! deploy-gate rules (rollback, promote, stop) shared by ctrl-api and
//! ctrl-worker, so both give the same answers and the same messages.
//!
//! Deliberately free of I/O and async: everything here is a plain function of
//! its inputs and is unit-tested as such. The contents arrive with the
//! contracts issue; the crate exists now so the dependency arrows
//! (binaries → services → core/db/proto) are fixed from the start.
