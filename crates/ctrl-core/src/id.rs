//! Public ids: a kind prefix, `_`, and 16 lowercase base-36 characters.
//!
//! Lowercase-only ids differ from the original's mixed case on purpose:
//! hostnames are case-insensitive and embed deployment ids, so ids that
//! differ only in case would map to the same hostname.

use std::fmt;

use rand::Rng;

/// Characters of the random part.
const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
/// Length of the random part (~82 bits).
const RANDOM_LEN: usize = 16;

/// What an id names; decides its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// `ws_`
    Workspace,
    /// `proj_`
    Project,
    /// `app_`
    App,
    /// `env_`
    Environment,
    /// `d_`
    Deployment,
    /// `flr_`
    FrontlineRoute,
    /// `dom_`
    CustomDomain,
    /// `cert_`
    Certificate,
    /// `ins_`
    Instance,
    /// `rgn_`
    Region,
    /// `cls_`
    Cluster,
    /// `evr_`
    EnvironmentVariable,
    /// `bld_`
    Build,
    /// `net_`
    NetworkPolicy,
    /// `agt_`
    AgentCredential,
    /// `lrq_`
    LogRequest,
}

impl IdKind {
    /// The prefix before the `_`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Workspace => "ws",
            Self::Project => "proj",
            Self::App => "app",
            Self::Environment => "env",
            Self::Deployment => "d",
            Self::FrontlineRoute => "flr",
            Self::CustomDomain => "dom",
            Self::Certificate => "cert",
            Self::Instance => "ins",
            Self::Region => "rgn",
            Self::Cluster => "cls",
            Self::EnvironmentVariable => "evr",
            Self::Build => "bld",
            Self::NetworkPolicy => "net",
            Self::AgentCredential => "agt",
            Self::LogRequest => "lrq",
        }
    }

    /// Every kind (for tests and tooling).
    pub const ALL: [Self; 16] = [
        Self::Workspace,
        Self::Project,
        Self::App,
        Self::Environment,
        Self::Deployment,
        Self::FrontlineRoute,
        Self::CustomDomain,
        Self::Certificate,
        Self::Instance,
        Self::Region,
        Self::Cluster,
        Self::EnvironmentVariable,
        Self::Build,
        Self::NetworkPolicy,
        Self::AgentCredential,
        Self::LogRequest,
    ];
}

/// A new random id of `kind`. The caller supplies the randomness (Restate
/// handlers pass their deterministic `ctx.rand()`).
pub fn generate(kind: IdKind, rng: &mut impl Rng) -> String {
    let mut id = String::with_capacity(kind.prefix().len() + 1 + RANDOM_LEN);
    id.push_str(kind.prefix());
    id.push('_');
    for _ in 0..RANDOM_LEN {
        id.push(char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]));
    }
    id
}

/// Why a string is not an id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId {
    /// The expected kind.
    pub kind: IdKind,
    /// The rejected input (truncated to 64 characters).
    pub input: String,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid id: expected \"{}_\" followed by 16 lowercase letters or digits",
            self.input,
            self.kind.prefix()
        )
    }
}

impl std::error::Error for InvalidId {}

/// Checks that `input` is an id of `kind` (exact prefix, 16 base-36 characters).
pub fn validate(kind: IdKind, input: &str) -> Result<(), InvalidId> {
    let valid = input
        .strip_prefix(kind.prefix())
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|random| {
            random.len() == RANDOM_LEN && random.bytes().all(|b| ALPHABET.contains(&b))
        });
    if valid {
        Ok(())
    } else {
        Err(InvalidId {
            kind,
            input: input.chars().take(64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn generated_ids_validate_and_carry_their_prefix() {
        let mut rng = StdRng::seed_from_u64(7);
        for kind in IdKind::ALL {
            let id = generate(kind, &mut rng);
            assert!(id.starts_with(&format!("{}_", kind.prefix())), "{id}");
            assert_eq!(validate(kind, &id), Ok(()));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_id() {
        let a = generate(IdKind::Deployment, &mut StdRng::seed_from_u64(1));
        let b = generate(IdKind::Deployment, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b);
    }

    #[test]
    fn prefixes_are_distinct_and_never_a_prefix_of_another() {
        for a in IdKind::ALL {
            for b in IdKind::ALL {
                if a != b {
                    assert!(!format!("{}_", a.prefix()).starts_with(&format!("{}_", b.prefix())));
                }
            }
        }
    }

    #[test]
    fn rejects_wrong_prefix_case_length_and_characters() {
        for bad in [
            "",
            "d_",
            "app_0123456789abcdef", // wrong kind
            "d_0123456789ABCDEF",   // uppercase
            "d_0123456789abcde",    // 15 chars
            "d_0123456789abcdef0",  // 17 chars
            "d_0123456789abcde-",   // punctuation
            "d-0123456789abcdef",   // separator
            "d_0123456789abcdé",    // non-ASCII
        ] {
            let err = validate(IdKind::Deployment, bad).expect_err(bad);
            assert!(err.to_string().contains("\"d_\""), "{err}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".*") {
            let _ = validate(IdKind::App, &s);
        }
    }
}
