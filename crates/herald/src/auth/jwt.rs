//! Subscriber tokens: JSON Web Tokens signed by the application's backend, checked here without any network
//! call.
//!
//! Three algorithms, each bound to its own kind of key so that no token can choose how it is checked (the
//! classic "alg confusion" and `alg: none` attacks): HS256 with a shared secret, RS256 with an RSA public key,
//! ES256 with a P-256 public key. Public keys come from a PEM file or a JWKS file. A token is checked in this
//! order, and the first failure is the answer: size, shape, header, signature, then the claims (`exp` required,
//! `nbf`, `iat`, `aud` and `iss` when configured, `channels` and `publish` patterns). Only a token whose
//! signature holds is ever told it is expired.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use sha2::Sha256;

use super::patterns::Pattern;

/// Longest token accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Shortest HS256 secret: 32 bytes, the size of the hash (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;
/// Smallest RSA key, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// A signature algorithm Herald accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC with SHA-256 and a shared secret.
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Self> {
        match name {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
        }
    }
}

/// Why a verification key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

fn key_error(message: impl Into<String>) -> KeyError {
    KeyError(message.into())
}

#[derive(Clone)]
enum KeyKind {
    Hmac(Box<[u8]>),
    Rsa(rsa::pkcs1v15::VerifyingKey<Sha256>),
    Ec(p256::ecdsa::VerifyingKey),
}

/// A key that checks token signatures, bound to one algorithm.
#[derive(Clone)]
pub struct VerifyingKey {
    kid: Option<String>,
    kind: KeyKind,
}

impl fmt::Debug for VerifyingKey {
    // A shared secret must never reach a log, even through a debug print of the configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey").field("alg", &self.algorithm().name()).field("kid", &self.kid).finish()
    }
}

impl VerifyingKey {
    /// An HS256 shared secret, at least [`MIN_SECRET_LEN`] bytes.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(key_error(format!("an HS256 secret must be at least {MIN_SECRET_LEN} bytes")));
        }
        Ok(Self { kid: None, kind: KeyKind::Hmac(secret.into()) })
    }

    /// A public key in PEM: `PUBLIC KEY` (an RSA or P-256 key) or `RSA PUBLIC KEY`. RSA keys check RS256
    /// tokens, P-256 keys ES256 tokens.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let pem = pem.trim();
        let kind = if pem.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
            let key = rsa::RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| key_error(format!("not an RSA key: {e}")))?;
            rsa_key(key)?
        } else if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(pem) {
            rsa_key(key)?
        } else if let Ok(key) = p256::PublicKey::from_public_key_pem(pem) {
            KeyKind::Ec(p256::ecdsa::VerifyingKey::from(key))
        } else if pem.contains("PRIVATE KEY") {
            return Err(key_error("this is a private key; Herald needs only the public key"));
        } else {
            return Err(key_error("expected a PEM `PUBLIC KEY` holding an RSA or a P-256 key"));
        };
        Ok(Self { kid: None, kind })
    }

    /// Every usable key of a JSON Web Key Set: `RSA` (RS256), `EC` on `P-256` (ES256) and `oct` (HS256).
    /// Keys for other algorithms or for encryption are skipped; a set with no usable key is refused.
    pub fn from_jwks(json: &str) -> Result<Vec<Self>, KeyError> {
        let set: Jwks = serde_json::from_str(json).map_err(|e| key_error(format!("not a JWKS document: {e}")))?;
        let mut keys = Vec::new();
        for jwk in set.keys {
            if jwk.usage.as_deref().is_some_and(|u| u != "sig") {
                continue;
            }
            let kind = match (jwk.kty.as_str(), jwk.alg.as_deref()) {
                ("RSA", None | Some("RS256")) => {
                    let n = jwk_bytes(&jwk.n, "n")?;
                    let e = jwk_bytes(&jwk.e, "e")?;
                    let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&n), rsa::BigUint::from_bytes_be(&e))
                        .map_err(|e| key_error(format!("JWKS RSA key: {e}")))?;
                    rsa_key(key)?
                }
                ("EC", None | Some("ES256")) if jwk.crv.as_deref() == Some("P-256") => {
                    let x = jwk_bytes(&jwk.x, "x")?;
                    let y = jwk_bytes(&jwk.y, "y")?;
                    let (Ok(x), Ok(y)) = (<[u8; 32]>::try_from(x.as_slice()), <[u8; 32]>::try_from(y.as_slice()))
                    else {
                        return Err(key_error("JWKS P-256 key: x and y must be 32 bytes each"));
                    };
                    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                    let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                        .map_err(|_| key_error("JWKS P-256 key: the point is not on the curve"))?;
                    KeyKind::Ec(key)
                }
                ("oct", None | Some("HS256")) => Self::hs256(&jwk_bytes(&jwk.k, "k")?)?.kind,
                _ => continue,
            };
            keys.push(Self { kid: jwk.kid, kind });
        }
        if keys.is_empty() {
            return Err(key_error("the JWKS holds no RS256, ES256 or HS256 signing key"));
        }
        Ok(keys)
    }

    /// The algorithm this key checks.
    pub fn algorithm(&self) -> Algorithm {
        match self.kind {
            KeyKind::Hmac(_) => Algorithm::Hs256,
            KeyKind::Rsa(_) => Algorithm::Rs256,
            KeyKind::Ec(_) => Algorithm::Es256,
        }
    }

    fn verify(&self, signed: &[u8], signature: &[u8]) -> bool {
        match &self.kind {
            KeyKind::Hmac(secret) => {
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
                mac.update(signed);
                // Constant-time comparison.
                mac.verify_slice(signature).is_ok()
            }
            KeyKind::Rsa(key) => rsa::pkcs1v15::Signature::try_from(signature)
                .is_ok_and(|signature| key.verify(signed, &signature).is_ok()),
            KeyKind::Ec(key) => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|signature| key.verify(signed, &signature).is_ok()),
        }
    }
}

fn rsa_key(key: rsa::RsaPublicKey) -> Result<KeyKind, KeyError> {
    let bits = key.size() * 8;
    if bits < MIN_RSA_BITS {
        return Err(key_error(format!("an RSA key must have at least {MIN_RSA_BITS} bits; this one has {bits}")));
    }
    Ok(KeyKind::Rsa(rsa::pkcs1v15::VerifyingKey::new(key)))
}

fn jwk_bytes(field: &Option<String>, name: &str) -> Result<Vec<u8>, KeyError> {
    let text = field.as_deref().ok_or_else(|| key_error(format!("a JWKS key lacks `{name}`")))?;
    Base64UrlUnpadded::decode_vec(text).map_err(|_| key_error(format!("a JWKS key's `{name}` is not base64url")))
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

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
        })
    }

    /// The first second (since 1970) in which a token with `exp` is refused, leeway included. `exp` and the
    /// clock are compared in whole seconds, so a token is accepted through the second `exp + leeway_secs`, and
    /// this instant, exactly, is when everything delivered under it must stop.
    pub fn refused_from(&self, exp: u64) -> u64 {
        exp.saturating_add(self.leeway_secs).saturating_add(1)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn short_secrets_and_private_keys_are_refused_at_load() {
        assert!(VerifyingKey::hs256(b"short").is_err());
        let err = VerifyingKey::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----").unwrap_err();
        assert!(err.to_string().contains("private key"));
        assert!(VerifyingKey::from_jwks(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AA"}]}"#).is_err());
        assert!(VerifyingKey::from_jwks("[]").is_err());
    }

    #[test]
    fn the_debug_form_never_shows_the_secret() {
        let shown = format!("{:?}", VerifyingKey::hs256(SECRET).unwrap());
        assert!(!shown.contains("0123456789"), "{shown}");
    }
}
