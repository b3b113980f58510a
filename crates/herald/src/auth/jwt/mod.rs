//! Subscriber tokens: JSON Web Tokens signed by the application's backend, checked here without any network
//! call.
//!
//! Three algorithms, each bound to its own kind of key so that no token can choose how it is checked (the
//! classic "alg confusion" and `alg: none` attacks): HS256 with a shared secret, RS256 with an RSA public key,
//! ES256 with a P-256 public key. Public keys come from a PEM file or a JWKS file. A token is checked in this
//! order, and the first failure is the answer: size, shape, header, signature, then the claims (`exp` required,
//! `nbf`, `iat`, `aud` and `iss` when configured, `channels` and `publish` patterns; `info`, any JSON, is what the
//! user presents on presence channels). Only a token whose signature holds is ever told it is expired.
//!
//! The keys and how they are loaded are in [`key`]; this module checks tokens with them, and builds its
//! [`TokenRules`] from the configuration's `[jwt]` section.

mod key;

use std::path::Path;

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Deserialize;

use super::patterns::Pattern;
use crate::config::{Config, ConfigError};
pub use key::{Algorithm, KeyError, VerifyingKey, MIN_RSA_BITS, MIN_SECRET_LEN};

/// Longest token accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why a token was refused. The message is safe to show to the client: it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token cannot be read, or its signature or claims do not hold.
    #[error("{0}")]
    Invalid(String),
    /// The token was valid but its `exp` has passed.
    #[error("the token expired at {exp} (seconds since 1970); get a new one")]
    Expired {
        /// Its `exp` claim.
        exp: u64,
    },
}

fn invalid(message: impl Into<String>) -> TokenError {
    TokenError::Invalid(message.into())
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user (`sub`), if the token names one.
    pub sub: Option<String>,
    /// When the token expires (`exp`), in seconds since 1970.
    pub exp: u64,
    /// Channels it may subscribe to.
    pub channels: Vec<Pattern>,
    /// Channels it may publish to over WebSocket.
    pub publish: Vec<Pattern>,
    /// What the user presents about itself on presence channels (the `info` claim), as JSON text.
    pub info: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    // A critical extension Herald does not know must make the token fail (RFC 7515 §4.1.11); Herald knows none.
    crit: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    exp: Option<serde_json::Number>,
    nbf: Option<serde_json::Number>,
    iat: Option<serde_json::Number>,
    aud: Option<Audience>,
    iss: Option<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    info: Option<Box<serde_json::value::RawValue>>,
}

/// A NumericDate (RFC 7519 §2): seconds since 1970, possibly fractional; negative or absurd values are refused.
fn seconds(claim: &str, value: &serde_json::Number) -> Result<u64, TokenError> {
    let secs = value.as_f64().filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e15);
    secs.map(|s| s as u64).ok_or_else(|| invalid(format!("`{claim}` must be a number of seconds since 1970")))
}

fn segment(text: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    Base64UrlUnpadded::decode_vec(text).map_err(|_| invalid(format!("the token's {what} is not base64url")))
}

/// How tokens are checked: the keys and the expected claims.
#[derive(Debug, Clone, Default)]
pub struct TokenRules {
    /// The keys; with none, no token is ever accepted.
    pub keys: Vec<VerifyingKey>,
    /// `aud` must contain this, when set.
    pub audience: Option<String>,
    /// `iss` must equal this, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
}

impl TokenRules {
    /// The rules of `config`'s `[jwt]` section, its key files read; a secret or key that cannot be used is
    /// refused naming its key (`jwt.secret` or the variable that set it, `jwt.public_key_file`, `jwt.jwks_file`).
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let jwt = &config.jwt;
        let mut keys = Vec::new();
        if let Some(secret) = &jwt.secret {
            let hs256 = VerifyingKey::hs256(secret.as_bytes())
                .map_err(|e| ConfigError::invalid(config.source("jwt.secret"), e.to_string()))?;
            keys.push(hs256);
        }
        if let Some(path) = &jwt.public_key_file {
            let key = "jwt.public_key_file";
            keys.push(VerifyingKey::from_pem(&read(key, path)?).map_err(|e| file_error(key, path, e))?);
        }
        if let Some(path) = &jwt.jwks_file {
            let key = "jwt.jwks_file";
            keys.extend(VerifyingKey::from_jwks(&read(key, path)?).map_err(|e| file_error(key, path, e))?);
        }
        Ok(Self { keys, audience: jwt.audience.clone(), issuer: jwt.issuer.clone(), leeway_secs: jwt.leeway_secs })
    }

    /// Checks `token` at `now` (seconds since 1970) and returns what it grants.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!("the token is longer than {MAX_TOKEN_LEN} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("a token is three base64url parts separated by dots"));
        };
        let header: Header = serde_json::from_slice(&segment(header_b64, "header")?)
            .map_err(|_| invalid("the token's header is not a JSON object with `alg`"))?;
        if header.crit.is_some() {
            return Err(invalid("the token's header has `crit` extensions Herald does not support"));
        }
        let alg = Algorithm::from_name(&header.alg)
            .ok_or_else(|| invalid(format!("algorithm {:?} is not accepted; use HS256, RS256 or ES256", header.alg)))?;
        let signature = segment(signature_b64, "signature")?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        let mut candidates = self.keys.iter().filter(|k| k.algorithm() == alg).peekable();
        if candidates.peek().is_none() {
            return Err(invalid(format!("no {} key is configured", alg.name())));
        }
        // With a `kid`, only keys of that id (or without one) are tried; rotation works by adding the new key.
        let kid = header.kid.as_deref();
        let signed_ok = candidates
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .any(|k| k.verify(signed, &signature));
        if !signed_ok {
            return Err(invalid("the token's signature does not match any configured key"));
        }
        let claims: RawClaims = serde_json::from_slice(&segment(payload_b64, "payload")?)
            .map_err(|e| invalid(format!("the token's claims are not readable: {e}")))?;
        self.check_claims(claims, now)
    }

    fn check_claims(&self, claims: RawClaims, now: u64) -> Result<Claims, TokenError> {
        let exp = seconds("exp", claims.exp.as_ref().ok_or_else(|| invalid("the token has no `exp`"))?)?;
        if now >= self.refused_from(exp) {
            return Err(TokenError::Expired { exp });
        }
        if let Some(nbf) = &claims.nbf {
            let nbf = seconds("nbf", nbf)?;
            if now.saturating_add(self.leeway_secs) < nbf {
                return Err(invalid(format!("the token is not valid before {nbf} (`nbf`)")));
            }
        }
        if let Some(iat) = &claims.iat {
            let iat = seconds("iat", iat)?;
            if now.saturating_add(self.leeway_secs) < iat {
                return Err(invalid("the token was issued in the future (`iat`)"));
            }
        }
        if let Some(expected) = &self.audience {
            let ok = match &claims.aud {
                Some(Audience::One(aud)) => aud == expected,
                Some(Audience::Many(auds)) => auds.iter().any(|a| a == expected),
                None => false,
            };
            if !ok {
                return Err(invalid(format!("the token's `aud` does not include {expected:?}")));
            }
        }
        if let Some(expected) = &self.issuer {
            if claims.iss.as_deref() != Some(expected.as_str()) {
                return Err(invalid(format!("the token's `iss` is not {expected:?}")));
            }
        }
        let patterns = |claim: &str, list: Vec<String>| -> Result<Vec<Pattern>, TokenError> {
            list.iter()
                .map(|p| Pattern::new(p).map_err(|e| invalid(format!("`{claim}`: {e}"))))
                .collect::<Result<_, _>>()
        };
        Ok(Claims {
            sub: claims.sub,
            exp,
            channels: patterns("channels", claims.channels)?,
            publish: patterns("publish", claims.publish)?,
            info: claims.info.map(|info| info.get().to_owned()),
        })
    }

    /// The first second (since 1970) in which a token with `exp` is refused, leeway included. `exp` and the
    /// clock are compared in whole seconds, so a token is accepted through the second `exp + leeway_secs`, and
    /// this instant, exactly, is when everything delivered under it must stop.
    pub fn refused_from(&self, exp: u64) -> u64 {
        exp.saturating_add(self.leeway_secs).saturating_add(1)
    }
}

/// A key file's text, or why it cannot be read, naming the setting that named it.
fn read(key: &str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))
}

fn file_error(key: &str, path: &Path, err: KeyError) -> ConfigError {
    ConfigError::invalid(key, format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn b64(bytes: &[u8]) -> String {
        Base64UrlUnpadded::encode_string(bytes)
    }

    fn hs256(header: &str, claims: &str, secret: &[u8]) -> String {
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn rules() -> TokenRules {
        TokenRules { keys: vec![VerifyingKey::hs256(SECRET).unwrap()], ..TokenRules::default() }
    }

    fn token(claims: &str) -> String {
        hs256(r#"{"alg":"HS256","typ":"JWT"}"#, claims, SECRET)
    }

    fn refusal(rules: &TokenRules, token: &str) -> String {
        match rules.verify(token, NOW) {
            Err(TokenError::Invalid(message)) => message,
            other => panic!("expected an invalid token, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_token_grants_its_claims() {
        let claims = rules()
            .verify(&token(r#"{"sub":"u42","exp":1800000060,"channels":["orders:*"],"publish":["chat:1"]}"#), NOW)
            .unwrap();
        assert_eq!(claims.sub.as_deref(), Some("u42"));
        assert_eq!(claims.exp, 1_800_000_060);
        assert_eq!(claims.channels, [Pattern::new("orders:*").unwrap()]);
        assert_eq!(claims.publish, [Pattern::new("chat:1").unwrap()]);
        assert_eq!(claims.info, None);
        let with_info = rules().verify(&token(r#"{"sub":"u42","exp":1800000060,"info":{"name":"Ada"}}"#), NOW);
        assert_eq!(with_info.unwrap().info.as_deref(), Some(r#"{"name":"Ada"}"#));
    }

    #[test]
    fn exp_is_required_and_enforced_with_the_leeway() {
        assert!(refusal(&rules(), &token(r#"{"sub":"u"}"#)).contains("exp"));
        assert_eq!(
            rules().verify(&token(r#"{"exp":1799999999}"#), NOW),
            Err(TokenError::Expired { exp: 1_799_999_999 })
        );
        let lenient = TokenRules { leeway_secs: 5, ..rules() };
        assert!(lenient.verify(&token(r#"{"exp":1799999999}"#), NOW).is_ok());
        assert!(refusal(&rules(), &token(r#"{"exp":-1}"#)).contains("exp"));
        assert!(refusal(&rules(), &token(r#"{"exp":"soon"}"#)).contains("claims"));
    }

    #[test]
    fn a_token_is_accepted_through_the_second_of_exp_plus_leeway_and_refused_from_the_instant_after() {
        let lenient = TokenRules { leeway_secs: 5, ..rules() };
        let token = token(r#"{"exp":1800000000}"#);
        assert!(lenient.verify(&token, NOW + 5).is_ok());
        assert_eq!(lenient.refused_from(NOW), NOW + 6);
        assert_eq!(lenient.verify(&token, lenient.refused_from(NOW)), Err(TokenError::Expired { exp: NOW }));
    }

    #[test]
    fn nbf_and_iat_in_the_future_are_refused() {
        assert!(refusal(&rules(), &token(r#"{"exp":1900000000,"nbf":1800000100}"#)).contains("nbf"));
        assert!(refusal(&rules(), &token(r#"{"exp":1900000000,"iat":1800000100}"#)).contains("iat"));
        assert!(rules().verify(&token(r#"{"exp":1900000000,"nbf":1800000000,"iat":1799999000}"#), NOW).is_ok());
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let strict = TokenRules { audience: Some("herald".into()), issuer: Some("shop".into()), ..rules() };
        assert!(strict.verify(&token(r#"{"exp":1900000000,"aud":["x","herald"],"iss":"shop"}"#), NOW).is_ok());
        assert!(refusal(&strict, &token(r#"{"exp":1900000000,"aud":"x","iss":"shop"}"#)).contains("aud"));
        assert!(refusal(&strict, &token(r#"{"exp":1900000000,"aud":"herald"}"#)).contains("iss"));
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_refused() {
        let none = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(br#"{"exp":1900000000}"#));
        assert!(refusal(&rules(), &none).contains("\"none\""));
        let hs512 = hs256(r#"{"alg":"HS512"}"#, r#"{"exp":1900000000}"#, SECRET);
        assert!(refusal(&rules(), &hs512).contains("HS512"));
    }

    #[test]
    fn a_token_cannot_pick_a_key_of_another_algorithm() {
        // An HS256 token "signed" with what could be a public key is refused when only RS256 keys exist.
        let only_rsa = TokenRules { keys: Vec::new(), ..TokenRules::default() };
        assert!(refusal(&only_rsa, &token(r#"{"exp":1900000000}"#)).contains("no HS256 key"));
    }

    #[test]
    fn a_wrong_secret_or_a_tampered_payload_fails_the_signature() {
        let other = hs256(r#"{"alg":"HS256"}"#, r#"{"exp":1900000000}"#, b"another secret of 32 bytes or more!!");
        assert!(refusal(&rules(), &other).contains("signature"));
        let good = token(r#"{"exp":1900000000,"channels":["a"]}"#);
        let parts: Vec<&str> = good.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(br#"{"exp":1900000000,"channels":["*"]}"#), parts[2]);
        assert!(refusal(&rules(), &tampered).contains("signature"));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_reason() {
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.e30.", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(matches!(rules().verify(bad, NOW), Err(TokenError::Invalid(_))), "{bad:?}");
        }
        let crit = hs256(r#"{"alg":"HS256","crit":["x"]}"#, r#"{"exp":1900000000}"#, SECRET);
        assert!(refusal(&rules(), &crit).contains("crit"));
        let bad_pattern = token(r#"{"exp":1900000000,"channels":["a b"]}"#);
        assert!(refusal(&rules(), &bad_pattern).contains("channels"));
    }
}
