//! The auth step: after the token names a target, may this client use it?
//!
//! websockify's auth plugins, by the same names and sources: `BasicHTTPAuth` (`user:password`, or
//! here also `@FILE`, an htpasswd file of bcrypt entries), `ExpectOrigin` (space-separated
//! origins) and `ClientCertCNAuth` (space-separated common names of verified client
//! certificates). A refusal is an HTTP answer with a one-line reason (websockify sends a status with
//! no body). `throttle` stops an address that keeps failing.

mod basic;
mod client_cert;
mod origin;
pub mod throttle;

use std::net::IpAddr;

use http::HeaderMap;

pub use client_cert::common_name;

use crate::http::reject::Reject;

/// What the auth step knows about the connection beyond the request's headers.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// `None` for clients on a UNIX socket.
    pub ip: Option<IpAddr>,
    /// The common name of a verified client certificate (`--verify-client`), never a header.
    pub cert_cn: Option<String>,
    /// The connection is TLS (the API's URLs say wss:// and https://).
    pub tls: bool,
}

pub enum Auth {
    Basic(basic::BasicAuth),
    Origin(origin::ExpectOrigin),
    ClientCert(client_cert::CommonNames),
}

impl Auth {
    /// `--auth-plugin CLASS --auth-source ARG`; CLASS short or dotted (`websockify.auth_plugins.X`).
    pub fn open(class: &str, source: &str) -> Result<Auth, String> {
        let short = class.strip_prefix("websockify.auth_plugins.").unwrap_or(class);
        match short {
            "BasicHTTPAuth" => basic::BasicAuth::new(source).map(Auth::Basic),
            "ExpectOrigin" => origin::ExpectOrigin::new(source).map(Auth::Origin),
            "ClientCertCNAuth" => client_cert::CommonNames::new(source).map(Auth::ClientCert),
            _ => Err(format!(
                "unknown --auth-plugin {class:?}: wsproxy has BasicHTTPAuth, ExpectOrigin and ClientCertCNAuth \
                 (custom Python plugins cannot be loaded)"
            )),
        }
    }

    /// Whether the plugin reads client certificates (it needs `--verify-client`).
    pub fn needs_client_cert(&self) -> bool {
        matches!(self, Auth::ClientCert(_))
    }

    pub async fn check(&self, headers: &HeaderMap, peer: &Peer) -> Result<(), Reject> {
        match self {
            Auth::Basic(basic) => basic.check(headers).await,
            Auth::Origin(origin) => origin.check(headers),
            Auth::ClientCert(names) => names.check(peer),
        }
        .map_err(Reject::guessing)
    }
}
