//! rustls configuration for websockify's TLS options.
//!
//! websockify hands `--cert/--key/--key-password/--ssl-version/--ssl-ciphers/--verify-client/
//! --cafile` to Python's `ssl` module (OpenSSL). This module maps the same options onto rustls,
//! always with the *ring* provider passed explicitly (never a process-wide default, so nothing
//! depends on which crate installed one first). What cannot be mapped one to one:
//!
//! - **Versions.** rustls speaks TLS 1.2 and 1.3 only. `default`, `tlsv1_1` and `tlsv1_2` all give
//!   1.2 + 1.3 (`tlsv1_1` warns once that 1.1 is not offered: it is a *minimum*, and nothing
//!   older than 1.2 is available anyway); `tlsv1_3` gives 1.3 only.
//! - **Ciphers.** `--ssl-ciphers` is an OpenSSL cipher string. Suite names, OpenSSL style
//!   (`ECDHE-RSA-AES128-GCM-SHA256`) or IANA style (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), are
//!   mapped to ring's suites in the order given, and that order is then the server's preference.
//!   Exclusions and modifiers (`!x`, `-x`, `+x`, `@STRENGTH`) are ignored. OpenSSL keywords
//!   (`HIGH`, `DEFAULT`, `ECDHE+AESGCM`...) are not evaluated: a string made only of keywords
//!   that would select modern suites keeps rustls's defaults (all AEAD with forward secrecy), so
//!   the common `HIGH:!aNULL:!MD5` keeps working. Unlike OpenSSL, the list also restricts TLS 1.3:
//!   naming only TLS 1.2 suites turns TLS 1.3 off and vice versa, and the protocol versions follow
//!   so the configuration stays consistent. A string that names nothing usable is an error that
//!   lists the supported names.
//! - **Keys.** PKCS#8, PKCS#1 (RSA) and SEC1 (EC) PEM keys load directly. `--key-password` only
//!   decrypts PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2); the legacy OpenSSL `Proc-Type: 4,ENCRYPTED`
//!   format is refused with the `openssl pkcs8 -topk8` command that converts it.
//! - **Client certificates.** `--verify-client` requires a certificate chaining to `--cafile`, or
//!   to the system roots without it (websockify's `set_default_verify_paths`). A given CA file
//!   turns verification on by itself.
//! - **`--ssl-target`.** The client side trusts the system roots, or *only* the roots in a given CA
//!   file, which websockify could not do (novnc/websockify#506).
//!
//! The server offers ALPN `http/1.1`: the WebSocket upgrade is HTTP/1.1, and a browser that
//! negotiated h2 could not upgrade.
//!
//! Every error is one line that names the file and says what to do, because it is printed as
//! the start-up failure.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{
    CipherSuite, ClientConfig, ProtocolVersion, RootCertStore, ServerConfig, SignatureAlgorithm, SupportedCipherSuite,
    SupportedProtocolVersion,
};

/// websockify's `--ssl-version` choices `default,tlsv1_1,tlsv1_2,tlsv1_3` (a minimum version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MinTlsVersion {
    Default,
    Tls11,
    Tls12,
    Tls13,
}

/// The server-side TLS options, borrowed from the validated configuration.
#[derive(Clone, Copy, Debug)]
pub struct ServerTls<'a> {
    /// PEM: certificate chain, and the key too when `key` is None (websockify's self.pem).
    pub cert: &'a Path,
    /// `--key`: a separate PEM key file.
    pub key: Option<&'a Path>,
    /// `--key-password`: decrypts a PKCS#8 `ENCRYPTED PRIVATE KEY`.
    pub key_password: Option<&'a str>,
    /// `--ssl-version`.
    pub min_version: MinTlsVersion,
    /// `--ssl-ciphers`: an OpenSSL cipher string.
    pub ciphers: Option<&'a str>,
    /// Some => --verify-client with this CA bundle (`--cafile`).
    pub client_ca: Option<&'a Path>,
    /// true with client_ca None => system roots (rustls-native-certs).
    pub verify_client: bool,
}

/// Builds the listener's TLS configuration, or a one-line error naming the file at fault.
pub fn server_config(opts: &ServerTls) -> Result<Arc<ServerConfig>, String> {
    let base = rustls::crypto::ring::default_provider();
    let suites = match opts.ciphers {
        Some(spec) => select_suites(spec, &base.cipher_suites)?,
        None => base.cipher_suites.clone(),
    };
    let versions = protocol_versions(opts.min_version, &suites)?;
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites,
        ..base
    });

    let cert_path = opts.cert;
    let cert_pem = read_file(cert_path, "certificate file", "give --cert FILE, or create self.pem")?;
    let (key_path, key_pem) = match opts.key {
        Some(path) => (path, read_file(path, "key file", "check --key FILE")?),
        None => (cert_path, cert_pem.clone()),
    };
    // Checked first: the PEM parser chokes on the header lines of such a key, even when it
    // shares the file with the certificate.
    if contains(&key_pem, b"Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "private key in {} uses legacy OpenSSL encryption (Proc-Type: 4,ENCRYPTED): convert it \
             with `openssl pkcs8 -topk8 -v2 aes-256-cbc -in {} -out key.pem` and give --key key.pem \
             --key-password",
            shown(key_path),
            shown(key_path)
        ));
    }
    let certs = parse_certs(&cert_pem)
        .and_then(|certs| {
            if certs.is_empty() {
                Err("no certificate found".to_owned())
            } else {
                Ok(certs)
            }
        })
        .map_err(|e| {
            format!(
                "{e} in certificate file {} (it needs a PEM \"BEGIN CERTIFICATE\" block; give --cert FILE)",
                shown(cert_path)
            )
        })?;
    let (key, decrypted) = load_key(&key_pem, key_path, opts.key.is_some(), opts.key_password)?;

    // Load the key once here for precise messages; rustls would only say "invalid key".
    let signing_key = provider.key_provider.load_private_key(key.clone_key()).map_err(|e| {
        if decrypted {
            format!("wrong --key-password for {}", shown(key_path))
        } else {
            format!("cannot use the private key in {}: {e}", shown(key_path))
        }
    })?;
    let only_tls12 = versions.iter().all(|v| v.version == ProtocolVersion::TLSv1_2);
    let algorithm = signing_key.algorithm();
    if only_tls12
        && !provider
            .cipher_suites
            .iter()
            .any(|s| s.usable_for_signature_algorithm(algorithm))
    {
        return Err(format!(
            "--ssl-ciphers leaves no TLS 1.2 suite usable with the {algorithm:?} key in {}: add an \
             ECDHE-{}-... suite or a TLS 1.3 suite",
            shown(key_path),
            if algorithm == SignatureAlgorithm::RSA {
                "RSA"
            } else {
                "ECDSA"
            }
        ));
    }

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("invalid TLS settings (--ssl-version/--ssl-ciphers): {e}"))?;
    let builder = match client_verifier(opts, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "the private key in {} does not match the certificate in {} (give the matching --key FILE)",
            shown(key_path),
            shown(cert_path)
        ),
        other => format!(
            "cannot use certificate {} with key {}: {other}",
            shown(cert_path),
            shown(key_path)
        ),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // With --ssl-ciphers the order given is the preference, as with OpenSSL's server preference.
    config.ignore_client_order = opts.ciphers.is_some();
    Ok(Arc::new(config))
}

/// For --ssl-target: system roots, or only the roots in `cafile` when given (websockify cannot trust a custom CA: #506).
pub fn client_config(cafile: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match cafile {
        Some(path) => roots_from_file(path)?,
        None => native_roots("--ssl-target")?,
    };
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("invalid TLS client settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One supported suite under its OpenSSL and IANA names.
struct SuiteName {
    openssl: &'static str,
    iana: &'static str,
    suite: CipherSuite,
}

/// Every suite of rustls's ring provider. For TLS 1.3 OpenSSL uses the IANA names.
const SUITE_NAMES: &[SuiteName] = &[
    SuiteName {
        openssl: "TLS_AES_256_GCM_SHA384",
        iana: "TLS_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS13_AES_256_GCM_SHA384,
    },
    SuiteName {
        openssl: "TLS_AES_128_GCM_SHA256",
        iana: "TLS_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS13_AES_128_GCM_SHA256,
    },
    SuiteName {
        openssl: "TLS_CHACHA20_POLY1305_SHA256",
        iana: "TLS_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    },
    SuiteName {
        openssl: "ECDHE-ECDSA-AES256-GCM-SHA384",
        iana: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    },
    SuiteName {
        openssl: "ECDHE-ECDSA-AES128-GCM-SHA256",
        iana: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    },
    SuiteName {
        openssl: "ECDHE-ECDSA-CHACHA20-POLY1305",
        iana: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    },
    SuiteName {
        openssl: "ECDHE-RSA-AES256-GCM-SHA384",
        iana: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    },
    SuiteName {
        openssl: "ECDHE-RSA-AES128-GCM-SHA256",
        iana: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    },
    SuiteName {
        openssl: "ECDHE-RSA-CHACHA20-POLY1305",
        iana: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        suite: CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    },
];

/// OpenSSL selector keywords that would pick at least one of the suites above. A string made only
/// of these (and exclusions) keeps rustls's defaults; `A+B` counts when every part is listed.
const SELECTORS: &[&str] = &[
    "HIGH", "DEFAULT", "ALL", "ECDHE", "EECDH", "kECDHE", "kEECDH", "AESGCM", "AES", "AES128", "AES256", "CHACHA20",
    "ECDSA", "aECDSA", "RSA", "aRSA", "TLSv1.2", "SHA256", "SHA384",
];

/// Maps an OpenSSL cipher string onto the provider's suites, in the order given.
fn select_suites(spec: &str, available: &[SupportedCipherSuite]) -> Result<Vec<SupportedCipherSuite>, String> {
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut selector = false;
    let mut unknown = Vec::new();
    let entries = spec
        .split(|c: char| c == ':' || c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty());
    for entry in entries {
        if entry.starts_with(['!', '-', '+', '@']) {
            continue;
        }
        if entry.split('+').all(|part| SELECTORS.contains(&part)) {
            selector = true;
            continue;
        }
        let named = SUITE_NAMES.iter().find(|n| {
            entry.eq_ignore_ascii_case(n.openssl)
                || entry.eq_ignore_ascii_case(n.iana)
                || n.suite.as_str().is_some_and(|s| entry.eq_ignore_ascii_case(s))
        });
        let found = named.and_then(|n| available.iter().find(|s| s.suite() == n.suite));
        match found {
            Some(suite) => {
                if !chosen.iter().any(|c| c.suite() == suite.suite()) {
                    chosen.push(*suite);
                }
            }
            None => unknown.push(entry),
        }
    }
    if !chosen.is_empty() {
        for entry in &unknown {
            tracing::warn!("--ssl-ciphers: ignoring {entry:?}: not a cipher suite wsproxy supports");
        }
        return Ok(chosen);
    }
    if selector {
        tracing::warn!(
            "--ssl-ciphers {spec:?}: OpenSSL keywords are not evaluated; using rustls's default \
             suites (all AEAD with forward secrecy)"
        );
        return Ok(available.to_vec());
    }
    let names: Vec<&str> = SUITE_NAMES.iter().map(|n| n.openssl).collect();
    Err(format!(
        "--ssl-ciphers {spec:?} names no supported cipher suite; supported (OpenSSL or IANA names): {}",
        names.join(", ")
    ))
}

/// The versions to offer: at least `min`, and only those the chosen suites can serve.
fn protocol_versions(
    min: MinTlsVersion,
    suites: &[SupportedCipherSuite],
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let wanted: &[&'static SupportedProtocolVersion] = match min {
        MinTlsVersion::Tls11 => {
            static WARN_TLS11: Once = Once::new();
            WARN_TLS11.call_once(|| {
                tracing::warn!("--ssl-version tlsv1_1: TLS 1.1 is not offered; the minimum is TLS 1.2");
            });
            &[&rustls::version::TLS12, &rustls::version::TLS13]
        }
        MinTlsVersion::Default | MinTlsVersion::Tls12 => &[&rustls::version::TLS12, &rustls::version::TLS13],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let versions: Vec<_> = wanted
        .iter()
        .copied()
        .filter(|v| suites.iter().any(|s| s.version().version == v.version))
        .collect();
    if versions.is_empty() {
        return Err(
            "--ssl-version tlsv1_3 with --ssl-ciphers naming only TLS 1.2 suites leaves no usable \
             protocol: add a TLS 1.3 suite such as TLS_AES_128_GCM_SHA256, or lower --ssl-version"
                .to_owned(),
        );
    }
    Ok(versions)
}

/// The client-certificate verifier, if client certificates are required.
fn client_verifier(
    opts: &ServerTls,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let roots = match (opts.client_ca, opts.verify_client) {
        (Some(ca), _) => roots_from_file(ca)?,
        (None, true) => native_roots("--verify-client")?,
        (None, false) => return Ok(None),
    };
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map(Some)
        .map_err(|e| format!("cannot set up client certificate verification: {e}"))
}

/// Trust anchors from a PEM bundle (`--cafile`).
fn roots_from_file(path: &Path) -> Result<RootCertStore, String> {
    let pem = read_file(path, "CA file", "check --cafile FILE")?;
    let certs = parse_certs(&pem).map_err(|e| {
        format!(
            "cannot parse CA file {}: {e} (--cafile needs PEM certificates)",
            shown(path)
        )
    })?;
    let mut roots = RootCertStore::empty();
    let mut first_error = None;
    for cert in certs {
        if let Err(e) = roots.add(cert) {
            first_error.get_or_insert(e);
        }
    }
    if roots.is_empty() {
        return Err(match first_error {
            Some(e) => format!("no usable CA certificate in {}: {e}", shown(path)),
            None => format!(
                "no CA certificate found in {} (--cafile needs PEM \"BEGIN CERTIFICATE\" blocks)",
                shown(path)
            ),
        });
    }
    Ok(roots)
}

/// The system's trust anchors, as OpenSSL's `set_default_verify_paths` would find them.
fn native_roots(flag: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "skipped unparsable system CA certificates");
    }
    if roots.is_empty() {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{why}: {flag} needs them; install ca-certificates or give --cafile FILE"
        ));
    }
    for e in &found.errors {
        tracing::warn!("while loading system CA certificates: {e}");
    }
    Ok(roots)
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM ({e})"))
}

/// The first private key in `pem`, decrypting a PKCS#8 `ENCRYPTED PRIVATE KEY` with the password.
/// Returns whether it was decrypted, so a key that then fails to load means a wrong password.
fn load_key(
    pem: &[u8],
    path: &Path,
    separate_file: bool,
    password: Option<&str>,
) -> Result<(PrivateKeyDer<'static>, bool), String> {
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| format!("cannot parse {}: bad PEM ({e})", shown(path)))?;
        let key = match kind {
            SectionKind::PrivateKey => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
            SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
            _ => continue,
        };
        return Ok((key, false));
    }
    if let Some(block) = encrypted_block(pem) {
        let Some(password) = password else {
            return Err(format!(
                "private key in {} is encrypted: give --key-password",
                shown(path)
            ));
        };
        return decrypt_key(block, path, password).map(|key| (key, true));
    }
    Err(if separate_file {
        format!(
            "no private key found in {} (expected a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
            shown(path)
        )
    } else {
        format!(
            "no private key found in {} (put the key in the same PEM or give --key FILE)",
            shown(path)
        )
    })
}

fn decrypt_key(block: &[u8], path: &Path, password: &str) -> Result<PrivateKeyDer<'static>, String> {
    use pkcs8::EncryptedPrivateKeyInfo;
    let (_label, der) = pkcs8::der::pem::decode_vec(block)
        .map_err(|e| format!("cannot parse the encrypted key in {}: {e}", shown(path)))?;
    let info = EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| format!("cannot parse the encrypted key in {}: {e}", shown(path)))?;
    match info.decrypt(password) {
        Ok(doc) => Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec()))),
        // A wrong password shows as bad padding, or (rarely) as garbage that is not DER.
        Err(pkcs8::Error::EncryptedPrivateKey(pkcs8::pkcs5::Error::DecryptFailed)) | Err(pkcs8::Error::Asn1(_)) => {
            Err(format!("wrong --key-password for {}", shown(path)))
        }
        Err(e) => Err(format!(
            "cannot decrypt the key in {}: {e} (re-encrypt it with `openssl pkcs8 -topk8 -v2 aes-256-cbc`)",
            shown(path)
        )),
    }
}

/// The `ENCRYPTED PRIVATE KEY` PEM block inside `pem`, boundaries included.
fn encrypted_block(pem: &[u8]) -> Option<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let start = find(pem, BEGIN)?;
    let rest = pem.get(start..)?;
    let end = find(rest, END)?.checked_add(END.len())?;
    rest.get(..end)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

fn read_file(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {} ({hint})", shown(path), io_reason(&e)))
}

/// The path as the user should see it: absolute, like websockify, which absolutises --cert.
fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| PathBuf::from(path))
        .display()
        .to_string()
}

/// An io::Error as text without the trailing " (os error N)" noise.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(pos) => text[..pos].to_owned(),
        None => text,
    }
}
