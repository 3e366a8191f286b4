//! Configuration files: TOML, `${VAR}` expansion, environment overrides,
//! defaults and validation.
//!
//! Loading happens in this order, and the first problem stops it with an
//! error that names the file and the field:
//!
//! 1. parse the TOML (syntax errors carry the line);
//! 2. expand `${VAR}` in every string value from the environment —
//!    `${VAR:-default}` falls back when VAR is unset or empty, `$${` is a
//!    literal `${`. Expansion happens after parsing, so a value containing
//!    quotes or newlines cannot change the file's structure, and comments are
//!    never expanded. Numbers and booleans may be given as strings
//!    (`port = "${PORT}"`);
//! 3. apply overrides from `{PREFIX}__{SECTION}__{KEY}` environment
//!    variables (e.g. `CTRL_API__DATABASE__URL`);
//! 4. deserialize into the service's type: `#[serde(default)]` supplies
//!    defaults, `#[serde(deny_unknown_fields)]` rejects typos;
//! 5. run [`Validate::validate`], collecting every problem at once.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::de::DeserializeOwned;

/// A configuration that can check itself after deserialization.
pub trait Validate {
    /// Records every problem in `v`.
    fn validate(&self, v: &mut Validator);
}

/// Collects validation problems, each naming its field.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldProblem>,
}

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Dotted path of the field, e.g. `database.url`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.message)
    }
}

impl Validator {
    /// The problems recorded so far.
    pub fn problems(&self) -> &[FieldProblem] {
        &self.errors
    }

    /// Records a problem unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.errors.push(FieldProblem {
                field: field.to_owned(),
                message: message.into(),
            });
        }
    }

    /// The value must not be empty or blank.
    pub fn nonempty(&mut self, field: &str, value: &str) {
        self.check(!value.trim().is_empty(), field, "must not be empty");
    }

    /// The value must lie in `range`.
    pub fn range<T: PartialOrd + fmt::Display + Copy>(
        &mut self,
        field: &str,
        value: T,
        range: RangeInclusive<T>,
    ) {
        let message = format!(
            "must be between {} and {}, got {value}",
            range.start(),
            range.end()
        );
        self.check(range.contains(&value), field, message);
    }

    /// The value must be a URL with one of `schemes` and a host.
    pub fn url(&mut self, field: &str, value: &str, schemes: &[&str]) {
        self.check(
            is_url(value, schemes),
            field,
            format!("must be a {} URL, got {value:?}", schemes.join(" or ")),
        );
    }

    /// Like [`Validator::url`] for a URL that may carry a credential: the
    /// message never quotes the value.
    pub fn secret_url(&mut self, field: &str, value: &str, schemes: &[&str]) {
        self.check(
            is_url(value, schemes),
            field,
            format!("must be a {} URL (value not shown)", schemes.join(" or ")),
        );
    }
}

fn is_url(value: &str, schemes: &[&str]) -> bool {
    value.split_once("://").is_some_and(|(scheme, rest)| {
        schemes.contains(&scheme) && !rest.is_empty() && !rest.starts_with('/')
    })
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax error.
    #[error("config file {origin} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        origin: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A `${VAR}` names an unset variable.
    #[error(
        "config file {origin}: field `{field}` uses ${{{var}}}, but environment variable {var} is not set"
    )]
    MissingVariable {
        /// The file.
        origin: String,
        /// The field containing the reference.
        field: String,
        /// The variable.
        var: String,
    },
    /// A `${` without a closing `}` or with an invalid variable name.
    #[error("config file {origin}: field `{field}` has a malformed ${{...}} reference")]
    BadReference {
        /// The file.
        origin: String,
        /// The field.
        field: String,
    },
    /// A field is missing, unknown or of the wrong type.
    #[error("config file {origin}: field `{field}`: {message}")]
    Field {
        /// The file.
        origin: String,
        /// Dotted path of the field.
        field: String,
        /// The deserializer's message.
        message: String,
    },
    /// Validation failed.
    #[error("config file {origin} is invalid: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid {
        /// The file.
        origin: String,
        /// Every problem found.
        problems: Vec<FieldProblem>,
    },
}

/// Loads `path` using the process environment for `${VAR}` and for
/// overrides named `{env_prefix}__{SECTION}__{KEY}`.
pub fn load<T: DeserializeOwned + Validate>(
    path: &Path,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let env: HashMap<String, String> = std::env::vars().collect();
    parse(&text, &path.display().to_string(), &env, env_prefix)
}

/// Parses configuration text with an explicit environment (what tests use).
pub fn parse<T: DeserializeOwned + Validate>(
    text: &str,
    origin: &str,
    env: &HashMap<String, String>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut table: toml::Table =
        text.parse()
            .map_err(|e: toml::de::Error| ConfigError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string().trim().to_owned(),
            })?;
    for (key, value) in table.iter_mut() {
        expand_value(value, key, origin, env)?;
    }
    let expanded = toml::to_string(&table).expect("a parsed table serializes");

    let prefix = format!("{env_prefix}__");
    let overrides: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let layered = config::Config::builder()
        .add_source(config::File::from_str(&expanded, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(env_prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| ConfigError::Field {
            origin: origin.to_owned(),
            field: "(environment override)".into(),
            message: e.to_string(),
        })?;

    let value: T = serde_path_to_error::deserialize(layered).map_err(|e| {
        let field = e.path().to_string();
        ConfigError::Field {
            origin: origin.to_owned(),
            field: if field == "." {
                "(top level)".into()
            } else {
                field
            },
            message: e.into_inner().to_string(),
        }
    })?;

    let mut validator = Validator::default();
    value.validate(&mut validator);
    if validator.errors.is_empty() {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems: validator.errors,
        })
    }
}

fn expand_value(
    value: &mut toml::Value,
    path: &str,
    origin: &str,
    env: &HashMap<String, String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => *s = expand(s, path, origin, env)?,
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, &format!("{path}[{i}]"), origin, env)?;
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                expand_value(item, &format!("{path}.{key}"), origin, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}`, `${VAR:-default}` and `$${` in one string.
fn expand(
    s: &str,
    field: &str,
    origin: &str,
    env: &HashMap<String, String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(literal) = after.strip_prefix("${") {
            out.push_str("${");
            rest = literal;
        } else if let Some(reference) = after.strip_prefix('{') {
            let bad = || ConfigError::BadReference {
                origin: origin.to_owned(),
                field: field.to_owned(),
            };
            let end = reference.find('}').ok_or_else(bad)?;
            let (name, default) = match reference[..end].split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (&reference[..end], None),
            };
            let valid_name = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name {
                return Err(bad());
            }
            match (env.get(name).filter(|v| !v.is_empty()), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) if env.contains_key(name) => {}
                (None, None) => {
                    return Err(ConfigError::MissingVariable {
                        origin: origin.to_owned(),
                        field: field.to_owned(),
                        var: name.to_owned(),
                    });
                }
            }
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        http_port: u16,
        token: String,
        tokens: Vec<String>,
        database: Database,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Database {
        url: String,
        #[serde(default = "default_pool")]
        max_connections: u32,
    }

    fn default_pool() -> u32 {
        10
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                http_port: 7091,
                token: String::new(),
                tokens: Vec::new(),
                database: Database {
                    url: "mysql://localhost/ctrl".into(),
                    max_connections: 10,
                },
            }
        }
    }

    impl Validate for Sample {
        fn validate(&self, v: &mut Validator) {
            v.range("http_port", self.http_port, 1..=65535);
            v.url("database.url", &self.database.url, &["mysql"]);
            v.range(
                "database.max_connections",
                self.database.max_connections,
                1..=1000,
            );
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_str(text: &str, vars: &[(&str, &str)]) -> Result<Sample, ConfigError> {
        parse(text, "test.toml", &env(vars), "CTRL_TEST")
    }

    #[test]
    fn defaults_fill_missing_fields() {
        assert_eq!(load_str("", &[]).unwrap(), Sample::default());
        let s = load_str("[database]\nurl = \"mysql://db/x\"\n", &[]).unwrap();
        assert_eq!(s.database.max_connections, 10);
        assert_eq!(s.http_port, 7091);
    }

    #[test]
    fn variables_expand_in_strings_arrays_and_tables() {
        let text = r#"
            # a comment with ${NOT_EXPANDED}
            token = "${TOKEN}"
            tokens = ["${TOKEN}", "plain", "${UNSET:-fallback}"]
            http_port = "${PORT}"
            [database]
            url = "mysql://${USER}:${PASS}@db:3306/ctrl"
        "#;
        let s = load_str(
            text,
            &[
                ("TOKEN", "t\"q"),
                ("PORT", "8443"),
                ("USER", "u"),
                ("PASS", "p"),
            ],
        )
        .unwrap();
        assert_eq!(s.token, "t\"q", "a quote in a value cannot break the file");
        assert_eq!(s.tokens, ["t\"q", "plain", "fallback"]);
        assert_eq!(s.http_port, 8443);
        assert_eq!(s.database.url, "mysql://u:p@db:3306/ctrl");
    }

    #[test]
    fn dollar_dollar_is_a_literal_and_lone_dollars_stay() {
        let s = load_str(r#"token = "$${LITERAL} costs $5""#, &[]).unwrap();
        assert_eq!(s.token, "${LITERAL} costs $5");
    }

    #[test]
    fn a_missing_variable_names_the_field_and_the_variable() {
        let err = load_str("[database]\nurl = \"${DATABASE_URL}\"\n", &[]).unwrap_err();
        assert!(
            matches!(&err, ConfigError::MissingVariable { field, var, .. } if field == "database.url" && var == "DATABASE_URL")
        );
        assert_eq!(
            err.to_string(),
            "config file test.toml: field `database.url` uses ${DATABASE_URL}, but environment variable DATABASE_URL is not set"
        );
    }

    #[test]
    fn a_malformed_reference_names_the_field() {
        for text in [
            "token = \"${OPEN\"",
            "token = \"${1BAD}\"",
            "token = \"${}\"",
        ] {
            let err = load_str(text, &[]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::BadReference { field, .. } if field == "token"),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = load_str(
            "[database]\nurl = \"mysql://db/x\"\nmax_conections = 5\n",
            &[],
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("max_conections"), "{text}");
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn a_wrong_type_names_the_field_path() {
        let err = load_str(
            "[database]\nurl = \"mysql://db/x\"\nmax_connections = \"many\"\n",
            &[],
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Field { field, .. } if field == "database.max_connections"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let err = load_str("[database]\nmax_connections = 3\n", &[]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("missing configuration field \"database.url\""),
            "{text}"
        );
    }

    #[test]
    fn validation_reports_every_problem_with_its_field() {
        let err = load_str(
            "http_port = 0\n[database]\nurl = \"postgres://x\"\nmax_connections = 0\n",
            &[],
        )
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}")
        };
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["http_port", "database.url", "database.max_connections"]
        );
        assert!(
            err.to_string()
                .contains("`http_port` must be between 1 and 65535, got 0"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_win_over_the_file() {
        let text = "http_port = 1000\n[database]\nurl = \"mysql://file/x\"\n";
        let s = load_str(
            text,
            &[
                ("CTRL_TEST__HTTP_PORT", "2000"),
                ("CTRL_TEST__DATABASE__URL", "mysql://env/x"),
            ],
        )
        .unwrap();
        assert_eq!(s.http_port, 2000);
        assert_eq!(s.database.url, "mysql://env/x");
    }

    #[test]
    fn syntax_errors_carry_the_location() {
        let err = load_str("http_port = \n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn load_reads_a_file_and_names_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctrl.toml");
        std::fs::write(&path, "http_port = 9999\n").unwrap();
        let s: Sample = load(&path, "CTRL_TEST_NOT_SET_ANYWHERE").unwrap();
        assert_eq!(s.http_port, 9999);
        let err = load::<Sample>(&dir.path().join("nope.toml"), "X").unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
