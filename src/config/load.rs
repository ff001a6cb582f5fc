//! Loading a [`Config`] from TOML and from `QUORATE_*` environment
//! variables (feature `config`).
//!
//! Both go through one path: the sources become one TOML table (the
//! environment's values laid over the file's), which serde turns into a
//! `Config` once, so a value means the same wherever it is written. Errors
//! name the field and say where its value came from.

use std::collections::HashSet;
use std::path::Path;

use toml::{Table, Value};

use super::Config;
use crate::error::{Error, Result};

/// The type of a field's value, to read it from an environment variable.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Comma-separated.
    List,
    Duration,
    Float,
    Bool,
    Text,
    /// `replicas,timeout`, as `1,100ms`.
    Replicas,
}

/// Every field, with its type: also the list of environment variables
/// (`QUORATE_` and the field's name in capitals).
const FIELDS: &[(&str, Kind)] = &[
    ("nodes", Kind::List),
    ("ttl", Kind::Duration),
    ("node_timeout", Kind::Duration),
    ("drift_factor", Kind::Float),
    ("retry_delay", Kind::Duration),
    ("retry_jitter", Kind::Duration),
    ("max_retry_delay", Kind::Duration),
    ("connect_timeout", Kind::Duration),
    ("max_ttl", Kind::Duration),
    ("allow_even_nodes", Kind::Bool),
    ("key_prefix", Kind::Text),
    ("restart_quarantine", Kind::Bool),
    ("wait_replicas", Kind::Replicas),
];

/// `QUORATE_*` variables that are not settings: the testkit's server
/// binary and the command-line inspector's config file.
const OTHER_VARIABLES: &[&str] = &["QUORATE_REDIS_SERVER", "QUORATE_CONFIG"];

/// Where the fields' values came from.
struct Origins {
    /// The file (or text), for fields the environment did not set.
    base: String,
    /// Fields set by an environment variable.
    from_env: HashSet<&'static str>,
}

impl Origins {
    /// The origin of `path`'s value (`nodes[0]` is part of `nodes`).
    fn of(&self, path: &str) -> String {
        let field = path.split(['[', '.']).next().unwrap_or(path);
        match self.from_env.get(field) {
            Some(f) => env_name(f),
            None => self.base.clone(),
        }
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
impl Config {
    /// The prefix of the environment variables [`with_env`](Self::with_env)
    /// reads.
    ///
    /// ```
    /// assert_eq!(quorate::Config::ENV_PREFIX, "QUORATE_");
    /// ```
    pub const ENV_PREFIX: &'static str = "QUORATE_";

    /// Parses TOML text and checks the settings.
    ///
    /// Every field is optional and takes its default when absent; a field
    /// quorate does not know is an error, so a typo never leaves a setting
    /// at its default. Durations are strings: `"30s"`, `"250ms"`, `"1m 30s"`.
    ///
    /// ```
    /// let config = quorate::Config::from_toml(r#"
    ///     nodes = ["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"]
    ///     ttl = "30s"
    ///     node_timeout = "50ms"
    ///     key_prefix = "myapp:"
    /// "#)?;
    /// assert_eq!(config.ttl, std::time::Duration::from_secs(30));
    ///
    /// let typo = quorate::Config::from_toml(r#"tll = "30s""#).unwrap_err();
    /// assert_eq!(typo.to_string(), "TOML: invalid tll: unknown field");
    /// # Ok::<(), quorate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ConfigLoad`] for text that is not TOML, an unknown field or a
    /// value of the wrong type; [`Error::InvalidConfig`] for a value out of
    /// range. Both name the field.
    pub fn from_toml(text: &str) -> Result<Config> {
        parse_named("TOML", text)
    }

    /// Reads a TOML file, as [`from_toml`](Self::from_toml).
    ///
    /// ```no_run
    /// let config = quorate::Config::from_file("/etc/myapp/quorate.toml")?.with_env()?;
    /// # Ok::<(), quorate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ConfigLoad`] naming the file when it cannot be read; as
    /// [`from_toml`](Self::from_toml) otherwise.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| load_error(&origin, None, e))?;
        parse_named(&origin, &text)
    }

    /// The default settings with the `QUORATE_*` environment variables
    /// laid over them; see [`with_env`](Self::with_env).
    ///
    /// ```no_run
    /// // QUORATE_NODES=redis://10.0.0.1,redis://10.0.0.2,redis://10.0.0.3 QUORATE_TTL=30s
    /// let config = quorate::Config::from_env()?;
    /// # Ok::<(), quorate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`with_env`](Self::with_env).
    pub fn from_env() -> Result<Config> {
        Config::default().with_env()
    }

    /// These settings with the process's `QUORATE_*` environment variables
    /// laid over them: one variable per field, `QUORATE_` and the field's
    /// name in capitals (`QUORATE_TTL=30s`, `QUORATE_NODE_TIMEOUT=50ms`,
    /// `QUORATE_ALLOW_EVEN_NODES=true`); `QUORATE_NODES` takes
    /// comma-separated URLs.
    ///
    /// ```no_run
    /// let config = quorate::Config::from_file("quorate.toml")?.with_env()?;
    /// # Ok::<(), quorate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ConfigLoad`] naming the variable for a value that does not
    /// parse, and for a `QUORATE_*` variable that names no field (a typo);
    /// [`Error::InvalidConfig`] for a value out of range.
    pub fn with_env(self) -> Result<Config> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().filter(|n| n.starts_with(Self::ENV_PREFIX)) else {
                continue;
            };
            let value = value
                .into_string()
                .map_err(|_| load_error(name, None, "not valid UTF-8"))?;
            vars.push((name.to_owned(), value));
        }
        self.with_env_vars(vars)
    }

    /// As [`with_env`](Self::with_env), from the given variables rather
    /// than the process's; names without the `QUORATE_` prefix are
    /// ignored.
    ///
    /// ```
    /// let config = quorate::Config::default()
    ///     .with_env_vars([("QUORATE_TTL", "30s"), ("QUORATE_NODES", "redis://a,redis://b,redis://c")])?;
    /// assert_eq!(config.nodes.len(), 3);
    ///
    /// let typo = quorate::Config::default().with_env_vars([("QUORATE_TLL", "30s")]).unwrap_err();
    /// assert!(typo.to_string().starts_with("QUORATE_TLL: no such setting"));
    /// # Ok::<(), quorate::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`with_env`](Self::with_env).
    pub fn with_env_vars<I, K, V>(self, vars: I) -> Result<Config>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut table = Table::try_from(&self).map_err(|e| load_error("settings", None, e))?;
        let mut origins = Origins {
            base: "settings".to_owned(),
            from_env: HashSet::new(),
        };
        for (name, value) in vars {
            let (name, value) = (name.as_ref(), value.as_ref());
            let Some(field) = name.strip_prefix(Self::ENV_PREFIX) else {
                continue;
            };
            if OTHER_VARIABLES.contains(&name) {
                continue;
            }
            let (field, kind) = field_of(name, field)?;
            table.insert(field.to_owned(), env_value(name, field, kind, value)?);
            origins.from_env.insert(field);
        }
        parse(table, &origins)
    }

    /// These settings as TOML text, which [`from_toml`](Self::from_toml)
    /// reads back to the same settings.
    ///
    /// ```
    /// let config = quorate::Config::default();
    /// assert_eq!(quorate::Config::from_toml(&config.to_toml())?, config);
    /// # Ok::<(), quorate::Error>(())
    /// ```
    pub fn to_toml(&self) -> String {
        // Strings, numbers, booleans and arrays of strings: TOML holds them
        // all, so this cannot fail.
        toml::to_string(self).unwrap_or_default()
    }
}

/// The field a `QUORATE_*` variable sets.
fn field_of(name: &str, field: &str) -> Result<(&'static str, Kind)> {
    let lower = field.to_ascii_lowercase();
    FIELDS
        .iter()
        .find(|(f, _)| *f == lower)
        .copied()
        .ok_or_else(|| {
            let known: Vec<String> = FIELDS.iter().map(|(f, _)| env_name(f)).collect();
            load_error(
                name,
                None,
                format!("no such setting (known: {})", known.join(", ")),
            )
        })
}

fn env_name(field: &str) -> String {
    format!("{}{}", Config::ENV_PREFIX, field.to_ascii_uppercase())
}

/// An environment variable's text as the TOML value of its field.
fn env_value(name: &str, field: &str, kind: Kind, text: &str) -> Result<Value> {
    let text = text.trim();
    Ok(match kind {
        Kind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Kind::Duration | Kind::Text => Value::String(text.to_owned()),
        Kind::Float => Value::Float(
            text.parse()
                .map_err(|_| load_error(name, Some(field), format!("{text:?} is not a number")))?,
        ),
        Kind::Replicas => {
            let Some((replicas, timeout)) = text.split_once(',') else {
                let reason = format!("{text:?} is not `replicas,timeout` (as `1,100ms`)");
                return Err(load_error(name, Some(field), reason));
            };
            let replicas: i64 = replicas.trim().parse().map_err(|_| {
                load_error(
                    name,
                    Some(field),
                    format!("{replicas:?} is not a count of replicas"),
                )
            })?;
            let mut table = Table::new();
            table.insert("replicas".into(), Value::Integer(replicas));
            table.insert("timeout".into(), Value::String(timeout.trim().to_owned()));
            Value::Table(table)
        }
        Kind::Bool => Value::Boolean(match text {
            "true" => true,
            "false" => false,
            _ => {
                let reason = format!("{text:?} is neither true nor false");
                return Err(load_error(name, Some(field), reason));
            }
        }),
    })
}

/// Parses TOML text from `origin`.
fn parse_named(origin: &str, text: &str) -> Result<Config> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| format!("line {}: ", line_of(text, s.start)))
            .unwrap_or_default();
        load_error(origin, None, format!("{at}{}", one_line(e.message())))
    })?;
    let origins = Origins {
        base: origin.to_owned(),
        from_env: HashSet::new(),
    };
    parse(table, &origins)
}

/// Turns the merged table into settings, and checks them.
fn parse(table: Table, origins: &Origins) -> Result<Config> {
    let durations = duration_texts(&table);
    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let message = one_line(e.inner().message());
        let field = e.path().to_string();
        let (field, reason) = match unknown_field(&message) {
            Some(name) => (name.to_owned(), "unknown field".to_owned()),
            None => {
                let why = durations.iter().find(|(f, _)| *f == field);
                let reason = why.and_then(|(_, text)| duration_reason(text));
                (field, reason.unwrap_or(message))
            }
        };
        load_error(&origins.of(&field), Some(&field), reason)
    })?;
    config.validate()?;
    Ok(config)
}

/// The text of every duration field: serde's error for one that does not
/// parse says only "expected a duration", humantime's says why.
fn duration_texts(table: &Table) -> Vec<(&'static str, String)> {
    FIELDS
        .iter()
        .filter(|(_, kind)| matches!(kind, Kind::Duration))
        .filter_map(|(field, _)| match table.get(*field) {
            Some(Value::String(text)) => Some((*field, text.clone())),
            _ => None,
        })
        .collect()
}

fn duration_reason(text: &str) -> Option<String> {
    let e = humantime_serde::re::humantime::parse_duration(text).err()?;
    Some(format!("{text:?} is not a duration: {e}"))
}

/// The field serde named unknown: a typo's name is reported as the field.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")?
        .split_once('`')
        .map(|(name, _)| name)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn load_error(origin: &str, field: Option<&str>, reason: impl ToString) -> Error {
    Error::ConfigLoad {
        origin: origin.to_owned(),
        field: field.map(str::to_owned),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_an_environment_variable() {
        let table = Table::try_from(Config {
            node_timeout: Some(std::time::Duration::from_millis(5)),
            wait_replicas: Some(crate::WaitReplicas {
                replicas: 1,
                timeout: std::time::Duration::from_millis(5),
            }),
            ..Config::default()
        })
        .unwrap();
        let mut names: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut fields: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        names.sort_unstable();
        fields.sort_unstable();
        assert_eq!(names, fields);
    }
}
