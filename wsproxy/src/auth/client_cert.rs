//! `ClientCertCNAuth`: the common name of the client's verified certificate (`--verify-client`)
//! must be in the list. Only the TLS layer's certificate counts: a client-sent
//! `SSL_CLIENT_S_DN_CN` header (what websockify's plugin reads) is never looked at.

use http::StatusCode;
use rustls::pki_types::CertificateDer;

use super::Peer;
use crate::http::reject::Reject;

pub struct CommonNames {
    names: Vec<String>,
}

impl CommonNames {
    pub fn new(source: &str) -> Result<Self, String> {
        let names: Vec<String> = source.split_whitespace().map(str::to_owned).collect();
        if names.is_empty() {
            return Err("ClientCertCNAuth needs --auth-source \"CN ...\": the common names allowed in".into());
        }
        Ok(CommonNames { names })
    }

    pub fn check(&self, peer: &Peer) -> Result<(), Reject> {
        match &peer.cert_cn {
            Some(cn) if self.names.iter().any(|n| n == cn) => Ok(()),
            Some(_) => Err(Reject::new(
                StatusCode::FORBIDDEN,
                "Forbidden: this client certificate's common name is not allowed",
            )),
            None => Err(Reject::new(
                StatusCode::FORBIDDEN,
                "Forbidden: a client certificate is required (connect with wss:// and a certificate)",
            )),
        }
    }
}

/// The subject's common name of a DER certificate.
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
