//! `JWTTokenApi`: the token is a signed JWT whose claims name the target (`host`, `port`), checked
//! with the key in `--token-source`, honouring `nbf` and `exp`.
//!
//! The key file is what websockify reads: a PEM key, public or private (a private key's public half
//! is used): RSA (RS256/384/512, PS256/384/512), EC P-256/P-384 (ES256/ES384), Ed25519 (EdDSA);
//! or an HMAC secret (HS256/384/512) written base64url-encoded, as a JWK's `k`. The key fixes the
//! algorithms accepted, so a token cannot pick a weaker one (`none`, or HMAC keyed with a public
//! key). Encrypted tokens (JWE, five parts) are refused with "encrypted tokens are not supported":
//! no maintained pure-Rust crate decrypts them. The key file is loaded again when it changes.

use std::path::{Path, PathBuf};

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::signature::{self, KeyPair};
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde::Deserialize;

use super::token_api::parse_json;
use super::{Lookup, LookupError, TokenSource};
use crate::config::Target;
use crate::reloading::Reloading;

pub struct JwtTokens {
    key: Reloading<Key>,
}

/// A verification key and the algorithms it may verify.
pub struct Key {
    decoding: DecodingKey,
    algorithms: Vec<Algorithm>,
}

#[derive(Deserialize)]
struct Claims {
    host: String,
    port: serde_json::Value,
}

impl JwtTokens {
    pub fn new(path: PathBuf) -> Result<Self, String> {
        Ok(JwtTokens {
            key: Reloading::new(path, load_key, true)?,
        })
    }
}

impl TokenSource for JwtTokens {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        let key = self.key.get();
        Box::pin(std::future::ready(verify(&key, token)))
    }
}

pub fn verify(key: &Key, token: &str) -> Result<Target, LookupError> {
    if token.split('.').count() == 5 {
        return Err(LookupError::Unknown("encrypted tokens are not supported".into()));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| LookupError::unknown())?;
    if !key.algorithms.contains(&header.alg) {
        return Err(LookupError::Unknown(format!(
            "Unknown token (signed with {:?}, which the key does not verify)",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = 0;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => LookupError::Unknown("Token expired".into()),
        ErrorKind::ImmatureSignature => LookupError::Unknown("Token not valid yet (nbf)".into()),
        ErrorKind::Json(_) => LookupError::Unknown("The token has no host and port claims".into()),
        _ => LookupError::unknown(),
    })?;
    let claims = serde_json::json!({"host": data.claims.host, "port": data.claims.port});
    parse_json(&claims.to_string()).map_err(|_| LookupError::Unknown("The token's target is malformed".into()))
}

/// Reads the key file: PEM (public key, private key or certificate), else an HMAC secret.
pub fn load_key(path: &Path) -> Result<Key, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read JWT key {}: {e}", path.display()))?;
    let cannot = |why: String| format!("cannot use JWT key {}: {why}", path.display());
    let sections: Vec<(SectionKind, Vec<u8>)> = <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| cannot(format!("bad PEM: {e:?}")))?;
    let Some((kind, der)) = sections.into_iter().next() else {
        return hmac_key(&bytes).map_err(cannot);
    };
    match kind {
        SectionKind::PublicKey => public_key(&der),
        SectionKind::Certificate => {
            let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("bad certificate: {e}"))?;
            public_key(cert.public_key().raw)
        }
        SectionKind::PrivateKey => private_key(&der),
        SectionKind::RsaPrivateKey => {
            let pair = signature::RsaKeyPair::from_der(&der).map_err(|e| format!("bad RSA key: {e}"))?;
            Ok(rsa(pair.public().as_ref()))
        }
        SectionKind::EcPrivateKey => Err(
            "an `EC PRIVATE KEY` (SEC1) is not read: convert it with `openssl pkcs8 -topk8 -nocrypt`, or give the \
             public key (`openssl ec -pubout`)"
                .into(),
        ),
        other => Err(format!("a PEM {other:?} is not a key")),
    }
    .map_err(cannot)
}

/// The file holds the secret base64url-encoded, as a JWK `k` (websockify: `JWK(k=..., kty='oct')`).
fn hmac_key(bytes: &[u8]) -> Result<Key, String> {
    let text: String = String::from_utf8_lossy(bytes).split_whitespace().collect();
    let text = text.trim_end_matches('=');
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| format!("neither a PEM key nor a base64url HMAC secret ({e})"))?;
    if secret.is_empty() {
        return Err("the HMAC secret is empty".into());
    }
    Ok(Key {
        decoding: DecodingKey::from_secret(&secret),
        algorithms: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
    })
}

fn rsa(pkcs1: &[u8]) -> Key {
    Key {
        decoding: DecodingKey::from_rsa_der(pkcs1),
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
    }
}

fn ec(point: &[u8], algorithm: Algorithm) -> Key {
    Key {
        decoding: DecodingKey::from_ec_der(point),
        algorithms: vec![algorithm],
    }
}

fn ed25519(public: &[u8]) -> Key {
    Key {
        decoding: DecodingKey::from_ed_der(public),
        algorithms: vec![Algorithm::EdDSA],
    }
}

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ED25519: &str = "1.3.101.112";

/// A `PUBLIC KEY` (SubjectPublicKeyInfo).
fn public_key(spki_der: &[u8]) -> Result<Key, String> {
    use x509_parser::prelude::FromDer;
    let (_, spki) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| format!("bad public key: {e}"))?;
    let bits = spki.subject_public_key.data.as_ref();
    match spki.algorithm.algorithm.to_id_string().as_str() {
        OID_RSA => Ok(rsa(bits)),
        OID_ED25519 => Ok(ed25519(bits)),
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Ok(ec(bits, Algorithm::ES256)),
                Some(OID_P384) => Ok(ec(bits, Algorithm::ES384)),
                other => Err(format!("EC curve {other:?} is not supported (P-256 and P-384 are)")),
            }
        }
        other => Err(format!("key algorithm {other} is not supported")),
    }
}

/// A PKCS#8 `PRIVATE KEY`: its public half.
fn private_key(der: &[u8]) -> Result<Key, String> {
    if let Ok(pair) = signature::RsaKeyPair::from_pkcs8(der) {
        return Ok(rsa(pair.public().as_ref()));
    }
    let rng = ring::rand::SystemRandom::new();
    if let Ok(pair) = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
        return Ok(ec(pair.public_key().as_ref(), Algorithm::ES256));
    }
    if let Ok(pair) = signature::EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der, &rng) {
        return Ok(ec(pair.public_key().as_ref(), Algorithm::ES384));
    }
    if let Ok(pair) = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        return Ok(ed25519(pair.public_key().as_ref()));
    }
    Err("a private key that is not RSA, EC P-256/P-384 or Ed25519".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn write(name: &str, contents: &[u8]) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wsproxy-jwt-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn hmac_secrets_as_jwk_k() {
        let secret = b"a shared secret of some length!!";
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let path = write("hmac", format!("{encoded}\n").as_bytes());
        let key = load_key(&path).unwrap();
        let sign = |claims: serde_json::Value, alg| {
            jsonwebtoken::encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
        };
        let target = Target::Tcp {
            host: "vnc1".into(),
            port: 5901,
        };
        let ok = sign(serde_json::json!({"host": "vnc1", "port": 5901}), Algorithm::HS256);
        assert_eq!(verify(&key, &ok).unwrap(), target);
        let ok = sign(serde_json::json!({"host": "vnc1", "port": "5901"}), Algorithm::HS512);
        assert_eq!(verify(&key, &ok).unwrap(), target);
        let expired = sign(
            serde_json::json!({"host": "vnc1", "port": 5901, "exp": now() - 10}),
            Algorithm::HS256,
        );
        assert_eq!(
            verify(&key, &expired),
            Err(LookupError::Unknown("Token expired".into()))
        );
        let early = sign(
            serde_json::json!({"host": "vnc1", "port": 5901, "nbf": now() + 3600}),
            Algorithm::HS256,
        );
        assert!(matches!(verify(&key, &early), Err(LookupError::Unknown(r)) if r.contains("nbf")));
        let other = jsonwebtoken::encode(
            &Header::default(),
            &serde_json::json!({"host": "h", "port": 1}),
            &EncodingKey::from_secret(b"other"),
        )
        .unwrap();
        assert_eq!(verify(&key, &other), Err(LookupError::unknown()));
        assert!(matches!(verify(&key, "a.b.c.d.e"), Err(LookupError::Unknown(r)) if r.contains("encrypted")));
        assert_eq!(verify(&key, "garbage"), Err(LookupError::unknown()));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn ec_private_and_public_pem() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let private = write("ec-private", pair.serialize_pem().as_bytes());
        let public = write("ec-public", pair.public_key_pem().as_bytes());
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"host": "::1", "port": 5900}),
            &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        let target = Target::Tcp {
            host: "::1".into(),
            port: 5900,
        };
        for path in [&private, &public] {
            let key = load_key(path).unwrap();
            assert_eq!(verify(&key, &token).unwrap(), target, "{}", path.display());
        }
        // An HS256 token keyed with the public key's bytes must not pass (algorithm confusion).
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"host": "h", "port": 1}),
            &EncodingKey::from_secret(pair.public_key_pem().as_bytes()),
        )
        .unwrap();
        assert!(verify(&load_key(&public).unwrap(), &confused).is_err());
        std::fs::remove_file(private).unwrap();
        std::fs::remove_file(public).unwrap();
    }

    #[test]
    fn bad_key_files_say_why() {
        let path = write(
            "bad",
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        );
        let err = load_key(&path).err().unwrap();
        assert!(err.contains("pkcs8"), "{err}");
        let path2 = write("notkey", b"!!! not base64 !!!");
        let err = load_key(&path2).err().unwrap();
        assert!(err.contains("base64url"), "{err}");
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(path2).unwrap();
    }
}
