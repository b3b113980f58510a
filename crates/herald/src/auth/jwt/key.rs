//! The keys that check token signatures, and how they are loaded: an HS256 shared secret, a PEM public key
//! (RSA or P-256) or a JSON Web Key Set. Each key is bound to one algorithm when it is loaded, so a token can
//! never choose how it is checked.

use std::fmt;

use base64ct::{Base64UrlUnpadded, Encoding};
use hmac::{Hmac, Mac};
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use serde::Deserialize;
use sha2::Sha256;

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
    pub(super) fn from_name(name: &str) -> Option<Self> {
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
    pub(super) kid: Option<String>,
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

    pub(super) fn verify(&self, signed: &[u8], signature: &[u8]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

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
