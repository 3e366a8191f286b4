//! Instance logs: how much past output a read returns, and the rules of the
//! relay that carries lines from an agent to a reader (ctrl-api files a
//! request, the agent pushes batches over its own connection; see
//! `ctrl_db::log_relay`). Shared by ctrl-api, cluster-sync and krane.

use std::time::Duration;

/// Lines of each instance's past output when the caller does not say.
pub const DEFAULT_TAIL_LINES: u32 = 100;

/// The most past lines of each instance a caller may ask for.
pub const MAX_TAIL_LINES: u32 = 10_000;

/// A longer line is clipped by the agent (and refused from one that does not).
pub const MAX_LINE_BYTES: usize = 16 << 10;

/// The most bytes of lines one push may carry (encoded).
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// How often a reader says it is still there.
pub const READER_REFRESH: Duration = Duration::from_secs(5);

/// A reader silent this long has gone: its agent is told to stop.
pub const READER_GONE_AFTER: Duration = Duration::from_secs(30);

/// How often an agent following a quiet stream asks whether its reader is
/// still there (an empty push).
pub const AGENT_PROBE: Duration = Duration::from_secs(10);

/// An agent silent this long (no push, not even an empty one) has stopped
/// answering: the reader is told so.
pub const AGENT_GONE_AFTER: Duration = Duration::from_secs(30);

/// Batches pushed and not yet read before a push waits for the reader.
pub const MAX_UNREAD_BATCHES: u64 = 32;
