//! frontline against a real database and cluster-sync (in process), with
//! in-process app instances: routing, propagation, TLS, WebSockets,
//! streaming, balancing, wake, and keeping the table when the control
//! plane is away.

mod harness;
mod malformed;
mod routing;
mod upstream;
