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
//!   to the system roots without it (websockify's `set_default_verify_paths`; the system CAs are
//!   then not named in the CertificateRequest, as with OpenSSL). A given CA file turns
//!   verification on by itself.
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
#[derive(Clone, Copy)]
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

/// [`ServerTls`] owned, kept so a reload (SIGHUP, a changed `--cert`) can build the configuration again.
#[derive(Clone)]
pub struct ServerTlsSource {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
    pub key_password: Option<String>,
    pub min_version: MinTlsVersion,
    pub ciphers: Option<String>,
    pub client_ca: Option<PathBuf>,
    pub verify_client: bool,
}

impl ServerTlsSource {
    pub fn borrowed(&self) -> ServerTls<'_> {
        ServerTls {
            cert: &self.cert,
            key: self.key.as_deref(),
            key_password: self.key_password.as_deref(),
            min_version: self.min_version,
            ciphers: self.ciphers.as_deref(),
            client_ca: self.client_ca.as_deref(),
            verify_client: self.verify_client,
        }
    }

    /// Reads the files again and builds a new configuration.
    pub fn load(&self) -> Result<Arc<ServerConfig>, String> {
        server_config(&self.borrowed())
    }

    /// The files the configuration is read from (certificate, key, client CA), to watch.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(self.cert.clone())
            .chain(self.key.clone())
            .chain(self.client_ca.clone())
            .collect()
    }
}

/// Written by hand so the password never reaches a log line.
impl std::fmt::Debug for ServerTls<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("key_password", &self.key_password.map(|_| "<redacted>"))
            .field("min_version", &self.min_version)
            .field("ciphers", &self.ciphers)
            .field("client_ca", &self.client_ca)
            .field("verify_client", &self.verify_client)
            .finish()
    }
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
    let identity = load_identity(opts)?;
    check_key(&identity, &provider, &versions)?;

    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("invalid TLS settings (--ssl-version/--ssl-ciphers): {e}"))?;
    let builder = match client_verifier(opts, &provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let Identity {
        certs, key, key_path, ..
    } = identity;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "the private key in {} does not match the certificate in {} (give the matching --key FILE)",
            shown(key_path),
            shown(opts.cert)
        ),
        other => format!(
            "cannot use certificate {} with key {}: {other}",
            shown(opts.cert),
            shown(key_path)
        ),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // With --ssl-ciphers the order given is the preference, as with OpenSSL's server preference.
    config.ignore_client_order = opts.ciphers.is_some();
    Ok(Arc::new(config))
}

/// The certificate chain and private key, with where the key came from for messages.
struct Identity<'a> {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    key_path: &'a Path,
    /// The key was decrypted with --key-password: if it then does not load, the password is wrong.
    decrypted: bool,
}

/// Reads `--cert` (and `--key`), websockify's self.pem layout included.
fn load_identity<'a>(opts: &ServerTls<'a>) -> Result<Identity<'a>, String> {
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
    let certs =
        parse_certs(&cert_pem).map_err(|e| format!("cannot parse certificate file {}: {e}", shown(cert_path)))?;
    if certs.is_empty() {
        return Err(format!(
            "no certificate found in {} (it needs a PEM \"BEGIN CERTIFICATE\" block; give --cert FILE)",
            shown(cert_path)
        ));
    }
    let (key, decrypted) = load_key(&key_pem, key_path, opts.key.is_some(), opts.key_password)?;
    Ok(Identity {
        certs,
        key,
        key_path,
        decrypted,
    })
}

/// Loads the key once for precise messages (rustls alone would only say "invalid key"), and
/// refuses TLS-1.2-only suites that cannot sign with it, which would fail every handshake.
fn check_key(
    identity: &Identity,
    provider: &CryptoProvider,
    versions: &[&'static SupportedProtocolVersion],
) -> Result<(), String> {
    let key_path = shown(identity.key_path);
    let signing_key = provider
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|e| {
            if identity.decrypted {
                format!("wrong --key-password for {key_path}")
            } else {
                format!("cannot use the private key in {key_path}: {e}")
            }
        })?;
    let only_tls12 = versions.iter().all(|v| v.version == ProtocolVersion::TLSv1_2);
    let algorithm = signing_key.algorithm();
    let usable = provider
        .cipher_suites
        .iter()
        .any(|s| s.usable_for_signature_algorithm(algorithm));
    if only_tls12 && !usable {
        let kind = if algorithm == SignatureAlgorithm::RSA {
            "RSA"
        } else {
            "ECDSA"
        };
        return Err(format!(
            "--ssl-ciphers leaves no TLS 1.2 suite usable with the {algorithm:?} key in {key_path}: \
             add an ECDHE-{kind}-... suite or a TLS 1.3 suite"
        ));
    }
    Ok(())
}

/// For TLS to the target (`--ssl-target`, `wss://` targets): system roots, or only the roots in
/// `cafile` (`--target-cafile`) when given (websockify cannot trust a custom CA: #506).
pub fn client_config(cafile: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let roots = match cafile {
        Some(path) => roots_from_file(path)?,
        None => native_roots("TLS to the target", "--target-cafile")?,
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
    "ECDSA", "aECDSA", "aRSA", "TLSv1.2", "SHA256", "SHA384",
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
    let (roots, system) = match (opts.client_ca, opts.verify_client) {
        (Some(ca), _) => (roots_from_file(ca)?, false),
        (None, true) => (native_roots("--verify-client", "--cafile")?, true),
        (None, false) => return Ok(None),
    };
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if system {
        // Naming ~150 system CAs in every CertificateRequest bloats the handshake; OpenSSL's
        // default verify paths send no names either, and clients then offer any certificate.
        builder = builder.clear_root_hint_subjects();
    }
    builder
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

/// The system's trust anchors, as OpenSSL's `set_default_verify_paths` would find them, for
/// `what`; `instead` is the option that names a file of CAs instead.
fn native_roots(what: &str, instead: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(found.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "skipped unparsable system CA certificates");
    }
    if roots.is_empty() {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "no system CA certificates found{why}: {what} needs them; install ca-certificates or give {instead} FILE"
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
        if password.is_some() {
            // Python ignores the password for a plain key too; say so, as it hints at a mix-up.
            tracing::warn!(
                "--key-password given but the private key in {} is not encrypted",
                shown(path)
            );
        }
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
        // pkcs5 0.7 reports bad padding on decryption as `EncryptFailed`, so both count.
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        ))
        | Err(pkcs8::Error::Asn1(_)) => Err(format!("wrong --key-password for {}", shown(path))),
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
    text.split(" (os error ").next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::ServerName;
    use std::process::Command;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A unique temporary directory removed on drop (no tempfile crate).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("wsproxy-tls-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `/usr/bin/openssl`, or None after printing why the calling test is skipped.
    fn openssl(test: &str) -> Option<&'static Path> {
        let path = Path::new("/usr/bin/openssl");
        if path.exists() {
            Some(path)
        } else {
            println!("skipping {test}: /usr/bin/openssl not found (needed to make the key)");
            None
        }
    }

    fn run(openssl: &Path, args: &[&str]) {
        let out = Command::new(openssl).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn test_ca() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "wsproxy test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// (certificate PEM, PKCS#8 key PEM) for "localhost", ECDSA P-256, signed by `ca`.
    fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let issuer: &Issuer<'static, KeyPair> = ca;
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn opts(cert: &Path) -> ServerTls<'_> {
        ServerTls {
            cert,
            key: None,
            key_password: None,
            min_version: MinTlsVersion::Default,
            ciphers: None,
            client_ca: None,
            verify_client: false,
        }
    }

    fn ring_suites() -> Vec<SupportedCipherSuite> {
        rustls::crypto::ring::default_provider().cipher_suites
    }

    fn client_builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
    }

    fn roots_of(ca: &CertifiedIssuer<'static, KeyPair>) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        roots
    }

    /// Version, suite and ALPN protocol as the client saw them.
    type Negotiated = (Option<ProtocolVersion>, Option<CipherSuite>, Option<Vec<u8>>);

    /// What each side saw: the server's and client's results, and the negotiated parameters.
    struct Outcome {
        server: Result<(), String>,
        client: Result<Negotiated, String>,
    }

    /// Handshake over an in-memory pipe, then one echo round trip.
    async fn handshake(server: Arc<ServerConfig>, mut client: ClientConfig) -> Outcome {
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let server_side = async move {
            let mut tls = acceptor.accept(server_io).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            tls.write_all(&buf).await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let client_side = async move {
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = connector.connect(name, client_io).await.map_err(|e| e.to_string())?;
            tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
            tls.flush().await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"ping");
            let conn = tls.get_ref().1;
            Ok::<_, String>((
                conn.protocol_version(),
                conn.negotiated_cipher_suite().map(|s| s.suite()),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            ))
        };
        let (server, client) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(server_side, client_side)
        })
        .await
        .expect("handshake timed out");
        Outcome { server, client }
    }

    #[test]
    fn self_pem_with_cert_and_key() {
        let tmp = TempDir::new("selfpem");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let path = tmp.write("self.pem", &format!("{cert}{key}"));
        let config = server_config(&opts(&path)).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(!config.ignore_client_order);
        // Key first, then certificate, works too.
        let path = tmp.write("self2.pem", &format!("{key}{cert}"));
        server_config(&opts(&path)).unwrap();
    }

    #[test]
    fn separate_cert_and_key_files() {
        let tmp = TempDir::new("twofiles");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let key_path = tmp.write("key.pem", &key);
        let o = ServerTls {
            key: Some(&key_path),
            ..opts(&cert_path)
        };
        server_config(&o).unwrap();
    }

    #[test]
    fn missing_cert_file_message() {
        let tmp = TempDir::new("missing");
        let path = tmp.0.join("self.pem");
        let err = server_config(&opts(&path)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "cannot read certificate file {}: No such file or directory (give --cert FILE, or create self.pem)",
                path.display()
            )
        );
        let ca = test_ca();
        let (cert, _) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let key_path = tmp.0.join("nokey.pem");
        let err = server_config(&ServerTls {
            key: Some(&key_path),
            ..opts(&cert_path)
        })
        .unwrap_err();
        assert!(err.starts_with("cannot read key file"), "{err}");
        assert!(err.contains("nokey.pem") && err.contains("--key"), "{err}");
    }

    #[test]
    fn relative_paths_are_shown_absolute() {
        let err = server_config(&opts(Path::new("surely-not-here-self.pem"))).unwrap_err();
        let cwd = std::env::current_dir().unwrap();
        assert!(
            err.contains(&cwd.join("surely-not-here-self.pem").display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn no_key_and_no_cert_messages() {
        let tmp = TempDir::new("nokey");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let err = server_config(&opts(&cert_path)).unwrap_err();
        assert_eq!(
            err,
            format!(
                "no private key found in {} (put the key in the same PEM or give --key FILE)",
                cert_path.display()
            )
        );
        let err = server_config(&ServerTls {
            key: Some(&cert_path),
            ..opts(&cert_path)
        })
        .unwrap_err();
        assert!(err.starts_with("no private key found in"), "{err}");
        assert!(err.contains("expected a PEM PRIVATE KEY"), "{err}");

        let key_path = tmp.write("key.pem", &key);
        let err = server_config(&opts(&key_path)).unwrap_err();
        assert!(err.starts_with("no certificate found in"), "{err}");
        assert!(err.contains("key.pem"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn mismatched_key_is_reported() {
        let tmp = TempDir::new("mismatch");
        let ca = test_ca();
        let (cert, _) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let (_, other_key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let key_path = tmp.write("key.pem", &other_key);
        let err = server_config(&ServerTls {
            key: Some(&key_path),
            ..opts(&cert_path)
        })
        .unwrap_err();
        assert!(err.contains("does not match the certificate"), "{err}");
    }

    #[test]
    fn rsa_pkcs1_key() {
        let Some(openssl) = openssl("rsa_pkcs1_key") else {
            return;
        };
        let tmp = TempDir::new("rsa");
        let key = tmp.0.join("rsa.pem");
        let cert = tmp.0.join("rsacert.pem");
        run(
            openssl,
            &["genrsa", "-traditional", "-out", key.to_str().unwrap(), "2048"],
        );
        run(
            openssl,
            &[
                "req",
                "-new",
                "-x509",
                "-key",
                key.to_str().unwrap(),
                "-subj",
                "/CN=localhost",
                "-days",
                "2",
                "-out",
                cert.to_str().unwrap(),
            ],
        );
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(pem.contains("BEGIN RSA PRIVATE KEY"), "not PKCS#1: {pem}");
        let o = ServerTls {
            key: Some(&key),
            ..opts(&cert)
        };
        server_config(&o).unwrap();
        // TLS 1.2 suites for the wrong key type would make every handshake fail: refused early.
        let err = server_config(&ServerTls {
            ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
            ..o
        })
        .unwrap_err();
        assert!(err.contains("RSA key") && err.contains("ECDHE-RSA"), "{err}");
        server_config(&ServerTls {
            ciphers: Some("ECDHE-RSA-AES128-GCM-SHA256"),
            ..o
        })
        .unwrap();
    }

    #[test]
    fn ec_sec1_key() {
        let Some(openssl) = openssl("ec_sec1_key") else {
            return;
        };
        let tmp = TempDir::new("sec1");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let pkcs8 = tmp.write("pkcs8.pem", &key);
        let sec1 = tmp.0.join("sec1.pem");
        run(
            openssl,
            &["ec", "-in", pkcs8.to_str().unwrap(), "-out", sec1.to_str().unwrap()],
        );
        assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
        server_config(&ServerTls {
            key: Some(&sec1),
            ..opts(&cert_path)
        })
        .unwrap();
    }

    #[tokio::test]
    async fn encrypted_pkcs8_key() {
        let Some(openssl) = openssl("encrypted_pkcs8_key") else {
            return;
        };
        let tmp = TempDir::new("enc");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let cert_path = tmp.write("cert.pem", &cert);
        let plain = tmp.write("plain.pem", &key);
        let enc = tmp.0.join("enc.pem");
        run(
            openssl,
            &[
                "pkcs8",
                "-topk8",
                "-v2",
                "aes-256-cbc",
                "-passout",
                "pass:secret",
                "-in",
                plain.to_str().unwrap(),
                "-out",
                enc.to_str().unwrap(),
            ],
        );
        let enc_pem = std::fs::read_to_string(&enc).unwrap();
        assert!(enc_pem.contains("BEGIN ENCRYPTED PRIVATE KEY"));
        let o = ServerTls {
            key: Some(&enc),
            ..opts(&cert_path)
        };

        let err = server_config(&o).unwrap_err();
        assert_eq!(
            err,
            format!("private key in {} is encrypted: give --key-password", enc.display())
        );
        let err = server_config(&ServerTls {
            key_password: Some("wrong"),
            ..o
        })
        .unwrap_err();
        assert_eq!(err, format!("wrong --key-password for {}", enc.display()));

        let config = server_config(&ServerTls {
            key_password: Some("secret"),
            ..o
        })
        .unwrap();
        let out = handshake(
            config,
            client_builder()
                .with_root_certificates(roots_of(&ca))
                .with_no_client_auth(),
        )
        .await;
        assert_eq!(out.server, Ok(()));
        assert!(out.client.is_ok(), "{:?}", out.client);

        // The encrypted key may also share self.pem with the certificate.
        let self_pem = tmp.write("self.pem", &format!("{cert}{enc_pem}"));
        server_config(&ServerTls {
            key_password: Some("secret"),
            ..opts(&self_pem)
        })
        .unwrap();
    }

    #[test]
    fn legacy_encrypted_key_is_refused_with_a_fix() {
        let tmp = TempDir::new("legacy");
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\nAAAA\n\
                      -----END RSA PRIVATE KEY-----\n";
        let ca = test_ca();
        let (cert, _) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let path = tmp.write("self.pem", &format!("{cert}{legacy}"));
        let err = server_config(&ServerTls {
            key_password: Some("x"),
            ..opts(&path)
        })
        .unwrap_err();
        assert!(err.contains("Proc-Type: 4,ENCRYPTED"), "{err}");
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn cipher_names_map_in_order() {
        let all = ring_suites();
        let got = select_suites(
            "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384,\
             tls_ecdhe_ecdsa_with_chacha20_poly1305_sha256 !aNULL:-MD5:+RC4:@STRENGTH:\
             ECDHE-RSA-AES128-GCM-SHA256:TLS13_CHACHA20_POLY1305_SHA256",
            &all,
        )
        .unwrap();
        let ids: Vec<CipherSuite> = got.iter().map(|s| s.suite()).collect();
        assert_eq!(
            ids,
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
            ]
        );
        // Every name in the table resolves to a suite of the ring provider.
        for name in SUITE_NAMES {
            assert_eq!(select_suites(name.openssl, &all).unwrap()[0].suite(), name.suite);
            assert_eq!(select_suites(name.iana, &all).unwrap()[0].suite(), name.suite);
        }
        assert_eq!(SUITE_NAMES.len(), all.len());
        // An unsupported OpenSSL name next to a supported one is skipped.
        let got = select_suites("AES128-SHA:ECDHE-ECDSA-AES256-GCM-SHA384", &all).unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn cipher_keywords_and_errors() {
        let all = ring_suites();
        for spec in ["HIGH:!aNULL:!MD5", "DEFAULT", "ECDHE+AESGCM:!aNULL"] {
            assert_eq!(select_suites(spec, &all).unwrap().len(), all.len(), "{spec}");
        }
        for spec in ["FOO:BAR", "!aNULL:!eNULL", "LOW", "", "AES128-SHA:DHE-RSA-AES256-SHA"] {
            let err = select_suites(spec, &all).unwrap_err();
            assert!(err.contains("names no supported cipher suite"), "{err}");
            assert!(err.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{err}");
            assert!(err.contains("TLS_AES_128_GCM_SHA256"), "{err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn versions_follow_min_version_and_suites() {
        let all = ring_suites();
        let tls12 = select_suites("ECDHE-RSA-AES128-GCM-SHA256", &all).unwrap();
        let tls13 = select_suites("TLS_AES_128_GCM_SHA256", &all).unwrap();
        let ids = |v: Vec<&'static SupportedProtocolVersion>| -> Vec<ProtocolVersion> {
            v.iter().map(|v| v.version).collect()
        };
        use ProtocolVersion::{TLSv1_2, TLSv1_3};
        for min in [MinTlsVersion::Default, MinTlsVersion::Tls11, MinTlsVersion::Tls12] {
            assert_eq!(ids(protocol_versions(min, &all).unwrap()), [TLSv1_2, TLSv1_3]);
            assert_eq!(ids(protocol_versions(min, &tls12).unwrap()), [TLSv1_2]);
            assert_eq!(ids(protocol_versions(min, &tls13).unwrap()), [TLSv1_3]);
        }
        assert_eq!(ids(protocol_versions(MinTlsVersion::Tls13, &all).unwrap()), [TLSv1_3]);
        let err = protocol_versions(MinTlsVersion::Tls13, &tls12).unwrap_err();
        assert!(
            err.contains("tlsv1_3") && err.contains("TLS_AES_128_GCM_SHA256"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn custom_ca_handshake_and_alpn() {
        let tmp = TempDir::new("handshake");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let self_pem = tmp.write("self.pem", &format!("{cert}{key}"));
        let ca_path = tmp.write("ca.pem", &ca.pem());
        let server = server_config(&opts(&self_pem)).unwrap();

        let client = Arc::unwrap_or_clone(client_config(Some(&ca_path)).unwrap());
        let out = handshake(server.clone(), client).await;
        assert_eq!(out.server, Ok(()));
        let (version, _, alpn) = out.client.unwrap();
        assert_eq!(version, Some(ProtocolVersion::TLSv1_3));
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

        // A client trusting another CA refuses the server: only the given roots are trusted.
        let other = test_ca();
        let other_path = tmp.write("other.pem", &other.pem());
        let client = Arc::unwrap_or_clone(client_config(Some(&other_path)).unwrap());
        let out = handshake(server, client).await;
        assert!(out.client.is_err());
        assert!(out.server.is_err());
    }

    #[tokio::test]
    async fn tls13_only_and_tls12_only_configs() {
        let tmp = TempDir::new("versions");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let self_pem = tmp.write("self.pem", &format!("{cert}{key}"));
        let tls12_client = || {
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots_of(&ca))
                .with_no_client_auth()
        };

        let tls13 = server_config(&ServerTls {
            min_version: MinTlsVersion::Tls13,
            ..opts(&self_pem)
        })
        .unwrap();
        let out = handshake(tls13.clone(), tls12_client()).await;
        assert!(out.server.is_err() && out.client.is_err());
        let modern = client_builder()
            .with_root_certificates(roots_of(&ca))
            .with_no_client_auth();
        let out = handshake(tls13, modern).await;
        assert_eq!(out.client.unwrap().0, Some(ProtocolVersion::TLSv1_3));

        // Naming only a TLS 1.2 suite turns TLS 1.3 off, and that suite is the one used.
        let only12 = server_config(&ServerTls {
            ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
            ..opts(&self_pem)
        })
        .unwrap();
        assert!(only12.ignore_client_order);
        let modern = client_builder()
            .with_root_certificates(roots_of(&ca))
            .with_no_client_auth();
        let (version, suite, _) = handshake(only12, modern).await.client.unwrap();
        assert_eq!(version, Some(ProtocolVersion::TLSv1_2));
        assert_eq!(suite, Some(CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256));

        let err = server_config(&ServerTls {
            min_version: MinTlsVersion::Tls13,
            ciphers: Some("ECDHE-ECDSA-AES128-GCM-SHA256"),
            ..opts(&self_pem)
        })
        .unwrap_err();
        assert!(err.contains("tlsv1_3"), "{err}");
        let err = server_config(&ServerTls {
            ciphers: Some("RC4-MD5"),
            ..opts(&self_pem)
        })
        .unwrap_err();
        assert!(err.contains("supported"), "{err}");
    }

    #[tokio::test]
    async fn verify_client_requires_a_certificate() {
        let tmp = TempDir::new("mtls");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let self_pem = tmp.write("self.pem", &format!("{cert}{key}"));
        let ca_path = tmp.write("ca.pem", &ca.pem());
        let server = server_config(&ServerTls {
            client_ca: Some(&ca_path),
            verify_client: true,
            ..opts(&self_pem)
        })
        .unwrap();

        let anonymous = Arc::unwrap_or_clone(client_config(Some(&ca_path)).unwrap());
        let out = handshake(server.clone(), anonymous).await;
        assert!(out.server.is_err(), "server accepted a client without a certificate");
        assert!(out.client.is_err());

        let (client_cert, client_key) = leaf(&ca, ExtendedKeyUsagePurpose::ClientAuth);
        let certs = CertificateDer::pem_slice_iter(client_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(client_key.as_bytes()).unwrap();
        let with_cert = client_builder()
            .with_root_certificates(roots_of(&ca))
            .with_client_auth_cert(certs, key)
            .unwrap();
        let out = handshake(server, with_cert).await;
        assert_eq!(out.server, Ok(()));
        assert!(out.client.is_ok(), "{:?}", out.client);
    }

    #[test]
    fn verify_client_without_cafile_uses_system_roots() {
        let tmp = TempDir::new("sysroots");
        let ca = test_ca();
        let (cert, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let self_pem = tmp.write("self.pem", &format!("{cert}{key}"));
        match server_config(&ServerTls {
            verify_client: true,
            ..opts(&self_pem)
        }) {
            Ok(_) => {}
            Err(e) => assert!(e.contains("--cafile"), "{e}"),
        }
        match client_config(None) {
            Ok(_) => {}
            Err(e) => assert!(e.contains("--cafile"), "{e}"),
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let shown = format!(
            "{:?}",
            ServerTls {
                key_password: Some("hunter2"),
                ..opts(Path::new("self.pem"))
            }
        );
        assert!(!shown.contains("hunter2") && shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn cafile_errors() {
        let tmp = TempDir::new("cafile");
        let missing = tmp.0.join("ca.pem");
        let err = client_config(Some(&missing)).unwrap_err();
        assert!(err.starts_with("cannot read CA file"), "{err}");
        assert!(
            err.contains("No such file or directory") && err.contains("--cafile"),
            "{err}"
        );
        let ca = test_ca();
        let (_, key) = leaf(&ca, ExtendedKeyUsagePurpose::ServerAuth);
        let key_only = tmp.write("key.pem", &key);
        let err = client_config(Some(&key_only)).unwrap_err();
        assert!(err.starts_with("no CA certificate found in"), "{err}");
        let ca_path = tmp.write("ca.pem", &ca.pem());
        client_config(Some(&ca_path)).unwrap();
    }
}
