//! `--cert auto`: TLS with no prepared certificate. A self-signed certificate for `--cert-name`s
//! (default: this machine's host name, localhost, 127.0.0.1, ::1 and the listen address) is made
//! at the first start with rcgen and kept in `--cert-dir` as one PEM (certificate and key, 0600),
//! so the next start reuses it and a browser's accepted exception survives restarts. It is made
//! anew only when it is missing, unreadable, expiring within 30 days, or does not cover a name
//! asked for. wsproxy prints its SHA-256 fingerprint, which a user compares with what the browser
//! shows before accepting it; pages and wss:// share the port, so one exception is enough.

use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const FILE: &str = "wsproxy-auto.pem";
/// How long a made certificate is valid (browsers take long-lived self-signed ones with an exception).
const VALIDITY: Duration = Duration::from_secs(825 * 86_400);
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Clone)]
pub struct AutoCert {
    /// The PEM file, to load as `--cert`.
    pub path: PathBuf,
    /// SHA-256 of the certificate, `AB:CD:...`.
    pub fingerprint: String,
    pub names: Vec<String>,
    /// Made at this start (else reused).
    pub made: bool,
}

/// The default directory: `$XDG_STATE_HOME/wsproxy`, `~/.local/state/wsproxy`, else `./wsproxy-cert`.
pub fn default_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("wsproxy");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/wsproxy"),
        None => PathBuf::from("wsproxy-cert"),
    }
}

/// The names a certificate is made for when none are given.
pub fn default_names(listen: Option<IpAddr>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str().filter(|h| !h.is_empty())
    {
        names.push(host.to_owned());
    }
    names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
    if let Some(ip) = listen.filter(|ip| !ip.is_unspecified()) {
        names.push(ip.to_string());
    }
    names.dedup();
    names
}

/// The certificate in `dir` for `names`: reused when it still fits, else made (and saved).
pub fn ensure(dir: &Path, names: &[String]) -> Result<AutoCert, String> {
    let path = dir.join(FILE);
    if let Ok(pem) = std::fs::read(&path)
        && let Some(der) = CertificateDer::pem_slice_iter(&pem).next().and_then(Result::ok)
        && fits(&der, names)
    {
        return Ok(AutoCert {
            fingerprint: fingerprint(&der),
            path,
            names: names.to_vec(),
            made: false,
        });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create --cert-dir {}: {e}", dir.display()))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| format!("cannot make a certificate for {names:?}: {e}"))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().map_or("wsproxy", String::as_str),
    );
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(86_400)).into();
    params.not_after = (now + VALIDITY).into();
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let fresh = dir.join(format!("{FILE}.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&fresh)
        .and_then(|mut f| std::io::Write::write_all(&mut f, pem.as_bytes()))
        .and_then(|()| std::fs::rename(&fresh, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(AutoCert {
        fingerprint: fingerprint(cert.der()),
        path,
        names: names.to_vec(),
        made: true,
    })
}

/// Whether a saved certificate covers every name and is not about to expire.
fn fits(der: &CertificateDer<'_>, names: &[String]) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return false;
    };
    let renew_at = SystemTime::now() + RENEW_BEFORE;
    let expires = cert.validity().not_after.timestamp();
    let renew_at = renew_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(i64::MAX, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if expires < renew_at {
        return false;
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let covered: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    names.iter().all(|n| covered.contains(n))
}

pub fn fingerprint(der: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_reused_unless_a_name_is_missing() {
        let dir = std::env::temp_dir().join(format!("wsproxy-autocert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
        let first = ensure(&dir, &names).unwrap();
        assert!(first.made);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&first.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = ensure(&dir, &names).unwrap();
        assert!(!again.made);
        assert_eq!(again.fingerprint, first.fingerprint);
        let more = ensure(&dir, &["console.example".to_owned()]).unwrap();
        assert!(more.made, "a new name makes a new certificate");
        assert_ne!(more.fingerprint, first.fingerprint);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
