//! Where settings come from, and how they are laid over each other: defaults < TOML file < `HERALD_*`
//! environment < flags.
//!
//! Every source becomes a tree of values (a `serde_json::Value`, the form serde reads anything from) laid over
//! the defaults' tree; the result is read into a [`Config`] once. An environment variable is the file key in
//! capitals (`HERALD_MAX_WAIT_SECS` is `max_wait_secs`, `HERALD_JWT_ISSUER` is `jwt.issuer`) and takes the type
//! of its setting's default: a whole number, `1`/`true`, a comma-separated list, or text. Each variable and each
//! flag is read alone over the defaults first, so a bad one is refused naming itself, as a bad file value is
//! refused with toml's message naming its key and line.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use super::{invalid, Config, ConfigError};

/// Overrides given on the command line (`None` = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--transports`, comma-separated.
    pub transports: Option<String>,
    /// `--engine`.
    pub engine: Option<String>,
    /// `--redis-url`.
    pub redis_url: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<String>,
    /// `--insecure`.
    pub insecure: bool,
}

impl Overrides {
    /// Each flag given: its name, its key and its value.
    fn values(&self) -> Vec<(&'static str, &'static str, Value)> {
        let text = |flag, key, value: &Option<String>| value.as_ref().map(|v| (flag, key, Value::from(v.as_str())));
        let mut given = vec![
            text("--listen", "listen", &self.listen),
            self.transports.as_ref().map(|v| ("--transports", "transports", list(v))),
            text("--engine", "engine", &self.engine),
            text("--redis-url", "redis_url", &self.redis_url),
            text("--data-dir", "data_dir", &self.data_dir),
        ];
        // The flag only ever switches it on: without it, the environment or the file decide.
        given.push(self.insecure.then_some(("--insecure", "insecure", Value::Bool(true))));
        given.into_iter().flatten().collect()
    }
}

/// Variables of the CLI client and the test suite share the prefix; they are not server settings.
const NOT_SETTINGS: [&str; 6] = ["URL", "LOG", "KEY", "TOKEN", "TEST_REDIS_URL", "TEST_PEBBLE"];

impl Config {
    /// Builds the configuration from a file (if any), the environment and flags, and validates it. Key files
    /// named in the file are found next to it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?,
            ),
            None => None,
        };
        let file = file.zip(text.as_deref());
        Self::from_sources(file, env, flags)
    }

    /// A configuration from a TOML document alone, validated; reads no file (for tests and fuzzing).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_sources(Some((Path::new(""), text)), [], &Overrides::default())
    }

    /// Lays the file (its path and text), the environment and the flags over the defaults, in that order.
    pub(super) fn from_sources(
        file: Option<(&Path, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let defaults = serde_json::to_value(Config::default()).map_err(|e| invalid("defaults", e.to_string()))?;
        let mut tree = defaults.clone();
        if let Some((path, text)) = file {
            merge(&mut tree, file_tree(path, text)?);
        }
        let mut sources = BTreeMap::new();
        for (variable, value) in env {
            let Some(name) = variable.strip_prefix("HERALD_") else { continue };
            if NOT_SETTINGS.contains(&name) {
                continue;
            }
            let (key, value) = env_value(&defaults, &variable, name, &value)?;
            lay(&mut tree, &defaults, &variable, &key, value)?;
            sources.insert(key, variable.clone());
        }
        for (flag, key, value) in flags.values() {
            lay(&mut tree, &defaults, flag, key, value)?;
            sources.insert(key.to_string(), flag.to_string());
        }
        inherit_default_namespace(&mut tree);
        inherit_pusher_limits(&mut tree);
        let mut config: Config = serde_json::from_value(tree).map_err(|e| invalid("configuration", e.to_string()))?;
        config.sources = sources;
        config.validate()?;
        Ok(config)
    }
}

/// The file's tree, its key files' paths made relative to the file's directory. toml reads the text into a
/// `Config` first, so a bad value is refused with its key and line.
fn file_tree(path: &Path, text: &str) -> Result<Value, ConfigError> {
    let parse = |message: String| ConfigError::Parse { path: path.display().to_string(), message };
    toml::from_str::<Config>(text).map_err(|e| parse(e.to_string()))?;
    let mut tree: Value = toml::from_str(text).map_err(|e| parse(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let paths =
        ["/jwt/public_key_file", "/jwt/jwks_file", "/tls_cert_file", "/tls_key_file", "/acme_cache_dir", "/data_dir"];
    for pointer in paths.into_iter().chain(["/acme_ca_file", "/webhook_ca_file"]) {
        if let Some(Value::String(file)) = tree.pointer_mut(pointer) {
            *file = dir.join(&*file).display().to_string();
        }
    }
    Ok(tree)
}

/// The key (`max_wait_secs`, `jwt.issuer`) a variable sets, and its value typed by the setting's default.
fn env_value(defaults: &Value, variable: &str, name: &str, text: &str) -> Result<(String, Value), ConfigError> {
    let unknown = || invalid(variable, "unknown setting");
    let lower = name.to_ascii_lowercase();
    let key = match lower.as_str() {
        "publisher_keys" => return Ok((lower, publisher_keys(text))),
        "jwks_file" => "jwt.jwks_file".to_string(),
        "pusher_apps" => return pusher_apps(variable, text).map(|apps| ("pusher.apps".to_string(), apps)),
        other => {
            if let Some(field) = other.strip_prefix("jwt_") {
                format!("jwt.{field}")
            } else if let Some(field) = other.strip_prefix("pusher_limits_") {
                format!("pusher.limits.{field}")
            } else if let Some(field) = other.strip_prefix("pusher_") {
                format!("pusher.{field}")
            } else {
                other.to_string()
            }
        }
    };
    let default = defaults.pointer(&format!("/{}", key.replace('.', "/"))).ok_or_else(unknown)?;
    let value = match default {
        Value::Number(_) => text
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| invalid(variable, format!("{text:?} is not a whole number")))?,
        Value::Bool(_) => Value::Bool(matches!(text.trim(), "1" | "true")),
        Value::Array(_) => list(text),
        Value::String(_) | Value::Null => Value::from(text),
        // A table (a namespace) has no variable.
        Value::Object(_) => return Err(unknown()),
    };
    Ok((key, value))
}

/// `HERALD_PUBLISHER_KEYS`: comma-separated secrets, named `env-1`, `env-2`, … for the logs.
fn publisher_keys(text: &str) -> Value {
    let secrets = text.split(',').map(str::trim).filter(|k| !k.is_empty());
    let keys = secrets.enumerate().map(|(i, key)| serde_json::json!({ "name": format!("env-{}", i + 1), "key": key }));
    Value::Array(keys.collect())
}

/// `HERALD_PUSHER_APPS`: comma-separated `id:key:secret` triples (the secret is everything after the second
/// `:`), each app with the default namespace (its id) and `[pusher.limits]`.
fn pusher_apps(variable: &str, text: &str) -> Result<Value, ConfigError> {
    let apps = text.split(',').map(str::trim).filter(|a| !a.is_empty()).map(|app| {
        let mut parts = app.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(key), Some(secret)) => Ok(serde_json::json!({ "id": id, "key": key, "secret": secret })),
            _ => Err(invalid(variable, "each app is id:key:secret, apps separated by commas")),
        }
    });
    apps.collect::<Result<Vec<_>, _>>().map(Value::Array)
}

/// A comma-separated list, each item trimmed (an empty item is kept for the setting to judge).
fn list(text: &str) -> Value {
    Value::Array(text.split(',').map(|item| Value::from(item.trim())).collect())
}

/// Lays `value` at `key` over `tree`, after reading it alone over the defaults so that a bad value is refused
/// naming `source` (the variable or flag).
fn lay(tree: &mut Value, defaults: &Value, source: &str, key: &str, value: Value) -> Result<(), ConfigError> {
    let overlay = key.rsplit('.').fold(value, |inner, part| Value::Object(Map::from_iter([(part.to_string(), inner)])));
    let mut alone = defaults.clone();
    merge(&mut alone, overlay.clone());
    serde_json::from_value::<Config>(alone).map_err(|e| invalid(source, e.to_string()))?;
    merge(tree, overlay);
    Ok(())
}

/// Lays `overlay` over `base`: tables key by key, anything else replaced whole.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// Each Pusher app's `limits` laid over `[pusher.limits]`, so an app inherits what it does not set.
fn inherit_pusher_limits(tree: &mut Value) {
    let Some(default) = tree.pointer("/pusher/limits").cloned() else { return };
    if let Some(Value::Array(apps)) = tree.pointer_mut("/pusher/apps") {
        for app in apps.iter_mut().filter_map(Value::as_object_mut) {
            let mut inherited = default.clone();
            merge(&mut inherited, app.remove("limits").unwrap_or(Value::Object(Map::new())));
            app.insert("limits".to_string(), inherited);
        }
    }
}

/// Each `[namespaces.<name>]` laid over `[default_namespace]`, so a namespace inherits what it does not set.
fn inherit_default_namespace(tree: &mut Value) {
    let Some(default) = tree.get("default_namespace").cloned() else { return };
    if let Some(Value::Object(namespaces)) = tree.get_mut("namespaces") {
        for settings in namespaces.values_mut() {
            let mut inherited = default.clone();
            merge(&mut inherited, std::mem::take(settings));
            *settings = inherited;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_sources(None, env, &Overrides::default())
    }

    fn refusal(pairs: &[(&str, &str)]) -> String {
        env(pairs).expect_err("a refused configuration").to_string()
    }

    #[test]
    fn a_variable_takes_the_type_of_its_settings_default() {
        let c = env(&[
            ("HERALD_MAX_FRAME_BYTES", " 4096 "),
            ("HERALD_REDIS_PREFIX", "123"),
            ("HERALD_INSECURE", "1"),
            ("HERALD_SSE_RETRY_MS", "500"),
            ("HERALD_JWT_LEEWAY_SECS", "9"),
            ("HERALD_JWT_ISSUER", "shop"),
        ])
        .unwrap();
        assert_eq!((c.max_frame_bytes, c.redis_prefix.as_str(), c.insecure, c.sse_retry_ms), (4096, "123", true, 500));
        assert_eq!((c.jwt.leeway_secs, c.jwt.issuer.as_deref()), (9, Some("shop")));
        assert!(!env(&[("HERALD_INSECURE", "no")]).unwrap().insecure);
        assert!(refusal(&[("HERALD_MAX_CONNECTIONS", "-1")]).starts_with("HERALD_MAX_CONNECTIONS: \"-1\" is not"));
    }

    #[test]
    fn list_variables_are_comma_separated() {
        let c = env(&[
            ("HERALD_CORS_ORIGINS", "https://a.example, https://b.example"),
            ("HERALD_TRANSPORTS", "sse,,poll,sse"),
            ("HERALD_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
            ("HERALD_PUBLISHER_KEYS", "first-key-0123456789, ,second-key-0123456789"),
        ])
        .unwrap();
        assert_eq!(c.cors_origins, ["https://a.example", "https://b.example"]);
        assert_eq!(c.transports, [super::super::TransportKind::Sse, super::super::TransportKind::Poll]);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "127.0.0.1"]);
        let names: Vec<&str> = c.publisher_keys.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["env-1", "env-2"]);
        assert_eq!(c.source("publisher_keys"), "HERALD_PUBLISHER_KEYS");
        assert_eq!(c.source("trusted_proxies"), "HERALD_TRUSTED_PROXIES");
        assert!(refusal(&[("HERALD_CORS_ORIGINS", "https://a.example,")]).contains("cors_origins"));
    }

    #[test]
    fn an_unknown_variable_is_refused_by_name_and_client_variables_are_ignored() {
        for unknown in ["HERALD_NOPE", "HERALD_JWT_COLOUR", "HERALD_NAMESPACES", "HERALD_DEFAULT_NAMESPACE"] {
            assert_eq!(refusal(&[(unknown, "1")]), format!("{unknown}: unknown setting"));
        }
        let ignored = ["HERALD_URL", "HERALD_LOG", "HERALD_KEY", "HERALD_TOKEN", "HERALD_TEST_REDIS_URL", "PATH"];
        assert!(env(&ignored.map(|name| (name, "x"))).is_ok());
    }

    #[test]
    fn the_jwks_file_variable_sets_the_jwt_key_and_env_paths_stay_as_given() {
        let c = env(&[("HERALD_JWKS_FILE", "keys/jwks.json"), ("HERALD_JWT_PUBLIC_KEY_FILE", "k.pem")]).unwrap();
        assert_eq!(c.jwt.jwks_file.as_deref(), Some(Path::new("keys/jwks.json")));
        assert_eq!(c.jwt.public_key_file.as_deref(), Some(Path::new("k.pem")));
    }

    #[test]
    fn key_files_named_in_the_file_are_found_next_to_it() {
        let toml = "[jwt]\npublic_key_file = \"k.pem\"\njwks_file = \"/abs/jwks.json\"";
        let c = Config::from_sources(Some((Path::new("/etc/herald/herald.toml"), toml)), [], &Overrides::default())
            .unwrap();
        assert_eq!(c.jwt.public_key_file.as_deref(), Some(Path::new("/etc/herald/k.pem")));
        assert_eq!(c.jwt.jwks_file.as_deref(), Some(Path::new("/abs/jwks.json")));
    }

    #[test]
    fn a_bad_flag_is_refused_naming_the_flag() {
        let flags = |f: Overrides| Config::from_sources(None, [], &f).expect_err("refused").to_string();
        let listen = flags(Overrides { listen: Some("here".into()), ..Overrides::default() });
        assert_eq!(listen, "--listen: \"here\" is not an address such as 127.0.0.1:7070");
        let engine = flags(Overrides { engine: Some("disc".into()), ..Overrides::default() });
        assert_eq!(engine, "--engine: unknown engine \"disc\"; expected memory, disk or redis");
        assert!(
            flags(Overrides { transports: Some("pigeon".into()), ..Overrides::default() }).starts_with("--transports")
        );
    }
}
