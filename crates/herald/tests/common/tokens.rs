//! Credentials for the tests, made the way an application's backend makes them: JWTs signed HS256 with a
//! shared secret, RS256 and ES256 with the keys in `tests/keys/`, and publisher keys; plus a server configured
//! to check them, and the bad tokens an attacker would try.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64ct::{Base64UrlUnpadded, Encoding};
use herald::config::{Config, NamespaceSettings, PublisherKeySettings};
use hmac::{Hmac, Mac};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Value};
use sha2::Sha256;

/// The HS256 secret of [`secured`] servers.
pub const SECRET: &str = "the-tests-shared-secret-of-32-bytes!";
/// A publisher key that may publish anywhere.
pub const BACKEND_KEY: &str = "backend-key-0123456789";
/// A publisher key limited to `orders:*`.
pub const ORDERS_KEY: &str = "orders-key-0123456789";

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

pub fn key_file(name: &str) -> String {
    std::fs::read_to_string(keys_dir().join(name)).unwrap()
}

pub fn jwks_path() -> PathBuf {
    keys_dir().join("jwks.json")
}

/// Claims of a token for `sub` that may read `channels`, valid for an hour.
pub fn claims(sub: &str, channels: &[&str]) -> Value {
    json!({ "sub": sub, "exp": now() + 3600, "iat": now(), "channels": channels })
}

fn b64(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()))
}

pub fn hs256_with(secret: &str, claims: &Value) -> String {
    let input = signing_input(&json!({ "alg": "HS256", "typ": "JWT" }), claims);
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// HS256 with [`SECRET`].
pub fn hs256(claims: &Value) -> String {
    hs256_with(SECRET, claims)
}

fn rs256_with(private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(private_pem).unwrap();
    let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
    let mut header = json!({ "alg": "RS256", "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    let input = signing_input(&header, claims);
    format!("{input}.{}", b64(&signer.sign(input.as_bytes()).to_vec()))
}

/// RS256 with `tests/keys/rsa-private.pem`.
pub fn rs256(claims: &Value) -> String {
    rs256_with(&key_file("rsa-private.pem"), None, claims)
}

/// RS256 with the key named `rsa-1` in the JWKS.
pub fn rs256_kid(claims: &Value) -> String {
    rs256_with(&key_file("rsa-private.pem"), Some("rsa-1"), claims)
}

/// RS256 with a key the server does not know.
pub fn rs256_other(claims: &Value) -> String {
    rs256_with(&key_file("other-rsa-private.pem"), None, claims)
}

/// ES256 with `tests/keys/ec-private.pem`.
pub fn es256(claims: &Value) -> String {
    let key = p256::ecdsa::SigningKey::from_pkcs8_pem(&key_file("ec-private.pem")).unwrap();
    let input = signing_input(&json!({ "alg": "ES256", "typ": "JWT" }), claims);
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(&signature.to_bytes()))
}

/// `alg: none`, no signature.
pub fn alg_none(claims: &Value) -> String {
    format!("{}.", signing_input(&json!({ "alg": "none", "typ": "JWT" }), claims))
}

/// `token` with its payload replaced by `claims` and its signature kept.
pub fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2])
}

/// A publisher key as a configuration names it.
pub fn publisher_key(name: &str, key: &str, channels: &[&str]) -> PublisherKeySettings {
    PublisherKeySettings {
        name: name.into(),
        key: key.into(),
        channels: channels.iter().map(|c| c.to_string()).collect(),
    }
}

/// A test server's configuration with every kind of credential: the two publisher keys, an HS256 secret, the
/// RSA public key in PEM and the JWKS (whose `ec-1` is the P-256 key, and `rsa-1` the RSA one again). No
/// namespace is public but `news`; `chat` lets clients publish.
pub fn secured() -> Config {
    let mut config = super::config();
    config.publisher_keys =
        vec![publisher_key("backend", BACKEND_KEY, &[]), publisher_key("orders", ORDERS_KEY, &["orders:*"])];
    config.jwt.secret = Some(SECRET.to_string());
    config.jwt.public_key_file = Some(keys_dir().join("rsa-public.pem"));
    config.jwt.jwks_file = Some(jwks_path());
    config.namespaces.insert("news".into(), NamespaceSettings { public: Some(true), ..NamespaceSettings::default() });
    config
        .namespaces
        .insert("chat".into(), NamespaceSettings { allow_client_publish: true, ..NamespaceSettings::default() });
    config
}
