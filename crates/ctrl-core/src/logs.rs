//! How much past output a log read returns: the same limits for ctrl-api's
//! `StreamDeploymentLogs` and the agents' log endpoint.

/// Lines of each instance's past output when the caller does not say.
pub const DEFAULT_TAIL_LINES: u32 = 100;

/// The most past lines of each instance a caller may ask for.
pub const MAX_TAIL_LINES: u32 = 10_000;
