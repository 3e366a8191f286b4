//! Values stored in ENUM and JSON columns that have no home in ctrl-core.
//! (Deployment status, desired state, steps and stickiness are ctrl-core
//! types, read through their `TryFrom<String>`.)

use serde::{Deserialize, Serialize};

/// A Rust enum stored as the strings of a MySQL ENUM column.
///
/// Encoded and decoded through `&str` (sqlx's derived MySQL enums reject
/// MariaDB ENUM columns with a binary collation), with an error naming the
/// unknown value.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The stored string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl sqlx::Type<sqlx::MySql> for $name {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <str as sqlx::Type<sqlx::MySql>>::type_info()
            }
            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::MySql> for $name {
            fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::MySql>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::MySql> for $name {
            fn decode(value: sqlx::mysql::MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::MySql>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

string_enum! {
    /// Production or preview.
    EnvironmentKind {
        /// The app's one production environment.
        Production = "production",
        /// A preview environment.
        Preview = "preview",
    }
}

string_enum! {
    /// Where a deployment's image comes from.
    SourceKind {
        /// A given image.
        Image = "image",
        /// Built from a git repository.
        Git = "git",
        /// Built from an uploaded build context.
        Context = "context",
    }
}

string_enum! {
    /// Where a log request stands (`log_requests.state`).
    LogRequestState {
        /// Filed, not yet handed to the agent.
        Pending = "pending",
        /// Handed to the agent.
        Claimed = "claimed",
        /// The agent sent its last batch.
        Ended = "ended",
    }
}

string_enum! {
    /// Where a build is.
    BuildStatus {
        /// Waiting for a build slot.
        Queued = "queued",
        /// Building or pushing; holds a slot.
        Running = "running",
        /// Built and pushed.
        Succeeded = "succeeded",
        /// Failed.
        Failed = "failed",
        /// Its deployment was cancelled or superseded.
        Cancelled = "cancelled",
    }
}

string_enum! {
    /// Why a deployment was created.
    TriggerKind {
        /// API call.
        Api = "api",
        /// The CLI.
        Cli = "cli",
        /// The dashboard.
        Dashboard = "dashboard",
        /// A git push.
        Github = "github",
        /// ctrl itself.
        System = "system",
    }
}

string_enum! {
    /// Who acted.
    ActorType {
        /// A person.
        User = "user",
        /// An API token.
        Token = "token",
        /// ctrl itself.
        System = "system",
    }
}

string_enum! {
    /// Stop signal.
    ShutdownSignal {
        /// SIGTERM.
        Sigterm = "SIGTERM",
        /// SIGINT.
        Sigint = "SIGINT",
        /// SIGQUIT.
        Sigquit = "SIGQUIT",
        /// SIGKILL.
        Sigkill = "SIGKILL",
    }
}

string_enum! {
    /// Where a custom domain's verification stands.
    CustomDomainStatus {
        /// Added; not checked yet.
        Pending = "pending",
        /// Being checked (about once a minute, for up to a day).
        Verifying = "verifying",
        /// Proven; routes to the environment.
        Verified = "verified",
        /// Gave up (timed out, or claimed by another workspace).
        Failed = "failed",
    }
}

string_enum! {
    /// Where an ACME challenge (one per domain, reused on renewal) stands.
    ChallengeStatus {
        /// Wants a certificate (new, or due for renewal).
        Waiting = "waiting",
        /// An order is under way.
        Pending = "pending",
        /// The certificate is issued; `expires_at` is its expiry.
        Verified = "verified",
        /// The last order failed (`last_error` says why).
        Failed = "failed",
    }
}

string_enum! {
    /// Protocol from the edge to the app.
    UpstreamProtocol {
        /// HTTP/1.1.
        Http1 = "http1",
        /// HTTP/2 cleartext.
        H2c = "h2c",
    }
}

string_enum! {
    /// Whether an environment variable can be revealed.
    EnvVarKind {
        /// Can be read back.
        Recoverable = "recoverable",
        /// Never read back through the API.
        Writeonly = "writeonly",
    }
}

string_enum! {
    /// Observed instance state.
    InstanceStatus {
        /// Starting or unhealthy.
        Pending = "pending",
        /// Healthy, receives traffic.
        Running = "running",
        /// Exited or crash-looping.
        Failed = "failed",
    }
}

string_enum! {
    /// The provider backend of a cluster's agent.
    Backend {
        /// Docker-API engine.
        Docker = "docker",
        /// Kubernetes.
        Kubernetes = "kubernetes",
        /// Not reported.
        Unknown = "unknown",
    }
}

string_enum! {
    /// Which agent a credential belongs to (and so which service it opens).
    AgentKind {
        /// The workload agent: ClusterService, bound to a region and a cell.
        Krane = "krane",
        /// The edge: EdgeService and AcmeService, bound to a region.
        Frontline = "frontline",
    }
}

/// The health check stored as JSON in settings and deployment snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// "GET" or "POST".
    pub method: String,
    /// Path starting with "/".
    pub path: String,
    /// Seconds between probes.
    pub interval_seconds: i32,
    /// Probe timeout in seconds.
    pub timeout_seconds: i32,
    /// Failures before unhealthy.
    pub failure_threshold: i32,
    /// Delay before the first probe.
    pub initial_delay_seconds: i32,
}

/// One page of a list, newest or oldest first depending on the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Cursor for the next page (`pk` of the last row), if there may be more.
    pub next_cursor: Option<u64>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only signals
    /// that another page exists.
    pub(crate) fn from_rows(mut rows: Vec<T>, limit: u32, pk: impl Fn(&T) -> u64) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(pk) } else { None };
        Self {
            items: rows,
            next_cursor,
        }
    }
}
