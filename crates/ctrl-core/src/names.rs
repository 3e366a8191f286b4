//! Names that end up in DNS, Kubernetes and URLs: slugs, DNS labels and
//! hostnames, and the git-branch "sluggify" of the original made safe.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Longest slug of a workspace, project, app or environment.
pub const MAX_SLUG_LEN: usize = 32;
/// Longest DNS label (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;
/// Longest hostname in presentation form without the trailing dot.
pub const MAX_HOSTNAME_LEN: usize = 253;

/// Project slugs that would be confusing or dangerous in hostnames.
pub const RESERVED_PROJECT_SLUGS: &[&str] = &[
    "api",
    "admin",
    "ctrl",
    "dashboard",
    "docs",
    "frontline",
    "internal",
    "status",
    "system",
    "www",
    "acme",
    "mail",
    "git",
];

/// Why a slug is rejected; `Display` is the user-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlugError {
    /// Empty input.
    #[error("must not be empty")]
    Empty,
    /// Too long.
    #[error("must be at most {MAX_SLUG_LEN} characters, got {0}")]
    TooLong(usize),
    /// Does not start with a lowercase letter.
    #[error("must start with a lowercase letter")]
    BadStart,
    /// Ends with a hyphen.
    #[error("must not end with \"-\"")]
    BadEnd,
    /// Contains something other than a-z, 0-9 and single hyphens.
    #[error("may contain only lowercase letters, digits and single hyphens")]
    BadCharacters,
    /// A reserved word.
    #[error("{0:?} is reserved")]
    Reserved(String),
}

/// Checks a workspace/project/app/environment slug: a DNS-1035 label of at
/// most 32 characters without consecutive hyphens (so generated hostnames
/// never contain an IDNA-like "--").
pub fn validate_slug(slug: &str) -> Result<(), SlugError> {
    if slug.is_empty() {
        return Err(SlugError::Empty);
    }
    if slug.len() > MAX_SLUG_LEN {
        return Err(SlugError::TooLong(slug.len()));
    }
    if !slug.as_bytes()[0].is_ascii_lowercase() {
        return Err(SlugError::BadStart);
    }
    if slug.ends_with('-') {
        return Err(SlugError::BadEnd);
    }
    if !slug
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || slug.contains("--")
    {
        return Err(SlugError::BadCharacters);
    }
    Ok(())
}

/// [`validate_slug`] plus the reserved-word check for project slugs.
pub fn validate_project_slug(slug: &str) -> Result<(), SlugError> {
    validate_slug(slug)?;
    if RESERVED_PROJECT_SLUGS.contains(&slug) {
        return Err(SlugError::Reserved(slug.to_owned()));
    }
    Ok(())
}

/// `s` cut to at most `max` bytes, at a character boundary: what an error
/// message may quote of a caller's input, or what fits a `VARCHAR(max)`.
pub fn clip(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// The error message for a value that is not a DNS label (quoted, clipped).
pub fn not_a_dns_label(value: &str) -> String {
    format!(
        "{:?} must be a DNS label (lowercase letters, digits and '-', 1-63 characters)",
        clip(value, 64)
    )
}

/// Whether `label` is a DNS label for hostnames (RFC 1123, lowercase):
/// 1–63 of a-z, 0-9, "-", not starting or ending with "-".
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Whether `label` is a DNS-1035 label (Kubernetes object names): a DNS
/// label that starts with a letter.
pub fn is_dns1035_label(label: &str) -> bool {
    is_dns_label(label) && label.as_bytes()[0].is_ascii_lowercase()
}

/// Whether `name` is a lowercase hostname: dot-separated DNS labels, at most
/// 253 characters, no trailing dot.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_HOSTNAME_LEN && name.split('.').all(is_dns_label)
}

/// A random DNS-1035 label of `len` characters (a letter, then letters and
/// digits), for workload names. `len` is clamped to 1..=63.
pub fn random_dns1035(len: usize, rng: &mut impl Rng) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = len.clamp(1, MAX_LABEL_LEN);
    let mut out = String::with_capacity(len);
    out.push(char::from(LETTERS[rng.random_range(0..LETTERS.len())]));
    for _ in 1..len {
        out.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    out
}

/// The result of [`sluggify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slugged {
    /// Lowercase a-z, 0-9 and single hyphens; no leading or trailing hyphen; may be empty.
    pub slug: String,
    /// Whether the input was already exactly this slug (nothing dropped, changed or truncated).
    pub lossless: bool,
}

/// Turns free text (a git branch, a fork owner) into DNS label characters:
/// every run of characters outside a-z/0-9 becomes one "-", ASCII letters are
/// lowercased, leading/trailing hyphens go, and the result is cut to `max`
/// bytes (never ending in "-"). Non-ASCII characters are dropped.
///
/// Unlike the original, it trims a leading "-" and reports whether anything
/// was lost, so callers can add a hash of the input and keep distinct inputs
/// distinct.
pub fn sluggify(input: &str, max: usize) -> Slugged {
    let mut slug = String::with_capacity(input.len().min(max));
    let mut pending_hyphen = false;
    for c in input.chars() {
        if c.is_ascii_alphanumeric() {
            if pending_hyphen && !slug.is_empty() {
                slug.push('-');
            }
            pending_hyphen = false;
            slug.push(c.to_ascii_lowercase());
        } else {
            pending_hyphen = true;
        }
    }
    if slug.len() > max {
        slug.truncate(max);
        while slug.ends_with('-') {
            slug.pop();
        }
    }
    let lossless = slug == input;
    Slugged { slug, lossless }
}

/// A short, stable digest of `parts` in base 36 (`len` characters, at most
/// 12): used to keep labels distinct when their readable part had to be
/// shortened or changed.
pub fn short_hash(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    let mut out = Vec::with_capacity(len.min(12));
    for _ in 0..len.min(12) {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    String::from_utf8(out).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "acme", "my-app", "a1", "x9-y8", &"a".repeat(32)] {
            assert_eq!(validate_slug(ok), Ok(()), "{ok}");
        }
        let cases: &[(&str, SlugError)] = &[
            ("", SlugError::Empty),
            (&"a".repeat(33), SlugError::TooLong(33)),
            ("1app", SlugError::BadStart),
            ("-app", SlugError::BadStart),
            ("App", SlugError::BadStart),
            ("app-", SlugError::BadEnd),
            ("my--app", SlugError::BadCharacters),
            ("my_app", SlugError::BadCharacters),
            ("my.app", SlugError::BadCharacters),
            ("myApp", SlugError::BadCharacters),
            ("appé", SlugError::BadCharacters),
        ];
        for (input, err) in cases {
            assert_eq!(validate_slug(input).as_ref(), Err(err), "{input}");
        }
        assert_eq!(
            validate_project_slug("api"),
            Err(SlugError::Reserved("api".into()))
        );
        assert_eq!(
            validate_slug("api"),
            Ok(()),
            "only project slugs are reserved"
        );
        assert_eq!(
            SlugError::TooLong(40).to_string(),
            "must be at most 32 characters, got 40"
        );
    }

    #[test]
    fn dns_labels_and_hostnames() {
        assert!(is_dns_label("a") && is_dns_label("0abc") && is_dns_label(&"a".repeat(63)));
        assert!(!is_dns_label("") && !is_dns_label(&"a".repeat(64)));
        assert!(
            !is_dns_label("-a")
                && !is_dns_label("a-")
                && !is_dns_label("A")
                && !is_dns_label("a_b")
        );
        assert!(is_dns1035_label("a0") && !is_dns1035_label("0a"));
        assert!(is_hostname("shop-acme.unkey.app"));
        assert!(!is_hostname("shop..app") && !is_hostname("shop.app.") && !is_hostname(""));
        let long = vec!["a".repeat(63); 4].join("."); // 255 characters
        assert!(!is_hostname(&long));
    }

    #[test]
    fn random_dns1035_names_are_valid() {
        let mut rng = StdRng::seed_from_u64(3);
        for len in [1, 12, 63, 100] {
            let name = random_dns1035(len, &mut rng);
            assert!(is_dns1035_label(&name), "{name}");
            assert_eq!(name.len(), len.min(63));
        }
    }

    #[test]
    fn sluggify_cases_from_the_reference_and_beyond() {
        let check = |input: &str, slug: &str, lossless: bool| {
            assert_eq!(
                sluggify(input, 80),
                Slugged {
                    slug: slug.into(),
                    lossless
                },
                "{input:?}"
            );
        };
        check("main", "main", true);
        check("feat-login", "feat-login", true);
        check("feat/Login_Page", "feat-login-page", false);
        check("/fix", "fix", false); // the original produced "-fix"
        check("fix/", "fix", false);
        check("a  b", "a-b", false);
        check("a--b", "a-b", false);
        check("Feature", "feature", false); // git branches are case-sensitive
        check("123-hotfix", "123-hotfix", true); // leading digits are fine inside a label
        check("fëature/日本", "f-ature", false);
        check("日本語", "", false);
        check("", "", true);
        let long = sluggify(&"ab-".repeat(100), 80);
        assert!(long.slug.len() <= 80 && !long.slug.ends_with('-') && !long.lossless);
    }

    #[test]
    fn short_hash_is_stable_and_separates_inputs() {
        assert_eq!(short_hash(&["a", "b"], 6), short_hash(&["a", "b"], 6));
        assert_ne!(
            short_hash(&["a", "b"], 6),
            short_hash(&["ab"], 6),
            "length-prefixed parts"
        );
        assert_ne!(short_hash(&["feat/a"], 6), short_hash(&["feat-a"], 6));
        assert_eq!(short_hash(&["x"], 6).len(), 6);
    }

    proptest! {
        #[test]
        fn sluggify_output_is_always_label_material(s in "\\PC{0,300}", max in 1usize..100) {
            let out = sluggify(&s, max);
            prop_assert!(out.slug.len() <= max);
            prop_assert!(out.slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            prop_assert!(!out.slug.starts_with('-') && !out.slug.ends_with('-'));
            prop_assert!(!out.slug.contains("--"));
            if out.lossless { prop_assert_eq!(&out.slug, &s); }
        }
    }
}

/// Checks a GitHub repository name `owner/repo` by GitHub's rules: the
/// owner 1–39 letters, digits and single hyphens (not at either end); the
/// repository 1–100 letters, digits, `.`, `_` and `-`, not `.` or `..`.
pub fn validate_repository(full: &str) -> Result<(), String> {
    let bad = || format!("{full:?} is not a GitHub repository as owner/repo");
    let (owner, repo) = full.split_once('/').ok_or_else(bad)?;
    let owner_ok = (1..=39).contains(&owner.len())
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !owner.starts_with('-')
        && !owner.ends_with('-')
        && !owner.contains("--");
    let repo_ok = (1..=100).contains(&repo.len())
        && repo
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && repo != "."
        && repo != "..";
    if owner_ok && repo_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod repository_tests {
    use super::validate_repository;

    #[test]
    fn github_repository_names() {
        for good in ["acme/hello", "a/b", "Acme-Co/my.repo_1", "x/.github"] {
            assert!(validate_repository(good).is_ok(), "{good}");
        }
        for bad in [
            "acme", "acme/", "/repo", "-acme/x", "acme-/x", "a--b/x", "a/..", "a/b/c", "a/b c",
            "a/é",
        ] {
            assert!(validate_repository(bad).is_err(), "{bad}");
        }
    }
}
