//! Auth plugins and the guessing limit on the real binary: each refusal an HTTP answer with a
//! reason, then a session that passes still works.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::util::*;

fn basic(user_pass: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(user_pass)
    )
}

async fn upgrade_status(addr: SocketAddr, headers: &str) -> (u16, String, Raw) {
    let (mut raw, head) = Raw::upgrade_to(addr, "/websockify", headers).await;
    let code = status(&head);
    if code != 101 {
        let body = raw.read_body(&head).await;
        return (code, format!("{head}\r\n\r\n{body}"), raw);
    }
    (code, head, raw)
}

#[tokio::test]
async fn basic_auth_with_a_password_and_with_an_htpasswd_file() {
    let dir = TempDir::new("basic");
    let target = echo_target().await.to_string();
    let hash = bcrypt::hash_with_result("open sesame", 4)
        .unwrap()
        .format_for_version(bcrypt::Version::TwoY);
    let htpasswd = dir.path("htpasswd");
    std::fs::write(&htpasswd, format!("bob:{hash}\n")).unwrap();
    let htpasswd_source = format!("@{}", htpasswd.display());
    for (source, good, bad) in [
        ("alice:s3cret", "alice:s3cret", "alice:wrong"),
        (htpasswd_source.as_str(), "bob:open sesame", "bob:open"),
    ] {
        let proxy = Proxy::start(&[
            "--auth-plugin",
            "websockify.auth_plugins.BasicHTTPAuth",
            "--auth-source",
            source,
            "127.0.0.1:0",
            &target,
        ]);
        let (code, text, _) = upgrade_status(proxy.addr, "").await;
        assert_eq!(code, 401, "{text}");
        assert_eq!(header(&text, "www-authenticate"), Some("Basic realm=\"Websockify\""));
        let (code, text, _) = upgrade_status(proxy.addr, &basic(bad)).await;
        assert_eq!(code, 401, "{text}");
        let (code, text, _) = upgrade_status(proxy.addr, "Authorization: Basic %%%\r\n").await;
        assert_eq!(code, 403, "{text}");
        let (code, text, _) = upgrade_status(proxy.addr, "Authorization: Bearer x\r\n").await;
        assert_eq!(code, 403, "{text}");
        let (code, text, mut raw) = upgrade_status(proxy.addr, &basic(good)).await;
        assert_eq!(code, 101, "{text}");
        raw.echo(b"authenticated").await;
        let logs = proxy.lines().join("\n");
        let password = good.split_once(':').unwrap().1;
        assert!(!logs.contains(password), "a password in the log: {logs}");
    }
}

#[tokio::test]
async fn web_auth_puts_the_pages_behind_the_same_auth() {
    let dir = TempDir::new("webauth");
    std::fs::write(dir.path("index.html"), "<h1>console</h1>").unwrap();
    let target = echo_target().await.to_string();
    let proxy = Proxy::start(&[
        "--auth-plugin",
        "BasicHTTPAuth",
        "--auth-source",
        "u:p",
        "--web",
        dir.0.to_str().unwrap(),
        "--web-auth",
        "127.0.0.1:0",
        &target,
    ]);
    let (code, head, _) = http_get(proxy.addr, "GET", "/", "").await;
    assert_eq!(code, 401, "{head}");
    let (code, _, body) = http_get(proxy.addr, "GET", "/", &basic("u:p")).await;
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("console"));
    // Without --web-auth the pages stay open while the WebSocket needs the password.
    let open = Proxy::start(&[
        "--auth-plugin",
        "BasicHTTPAuth",
        "--auth-source",
        "u:p",
        "--web",
        dir.0.to_str().unwrap(),
        "127.0.0.1:0",
        &target,
    ]);
    assert_eq!(http_get(open.addr, "GET", "/", "").await.0, 200);
    assert_eq!(upgrade_status(open.addr, "").await.0, 401);
}

#[tokio::test]
async fn expect_origin_accepts_only_listed_origins() {
    let target = echo_target().await.to_string();
    let proxy = Proxy::start(&[
        "--auth-plugin",
        "ExpectOrigin",
        "--auth-source",
        "https://console.example http://127.0.0.1:6080",
        "127.0.0.1:0",
        &target,
    ]);
    let (code, text, _) = upgrade_status(proxy.addr, "").await;
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("Invalid Origin"), "{text}");
    let (code, _, _) = upgrade_status(proxy.addr, "Origin: https://evil.example\r\n").await;
    assert_eq!(code, 403);
    let (code, _, mut raw) = upgrade_status(proxy.addr, "Origin: https://console.example\r\n").await;
    assert_eq!(code, 101);
    raw.echo(b"same origin").await;
}

/// A CA and a client certificate with common name `cn`, signed by it.
struct ClientPki {
    ca_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl ClientPki {
    fn new() -> ClientPki {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test client CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        ClientPki {
            ca_pem: ca.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn client(
        &self,
        cn: &str,
    ) -> (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ) {
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (
            cert.der().clone(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
    }
}

/// Upgrade over TLS with a client certificate; returns the status and the stream.
async fn tls_upgrade(
    addr: SocketAddr,
    server_ca: &[u8],
    client: (
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    ),
    headers: &str,
) -> (u16, tokio_rustls::client::TlsStream<TcpStream>) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(server_ca.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client.0], client.1)
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake timed out")
    .expect("TLS handshake");
    let request = format!(
        "GET /websockify HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    (status(&head), tls)
}

async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("response timed out")
            .unwrap();
        assert_eq!(n, 1, "closed before a response: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn tls_echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) {
    stream.write_all(&frame(0x82, payload, true)).await.unwrap();
    let mut header = [0u8; 2];
    tokio::time::timeout(WAIT, stream.read_exact(&mut header))
        .await
        .expect("no echo")
        .unwrap();
    assert_eq!(header[0], 0x82);
    let mut data = vec![0u8; usize::from(header[1] & 0x7f)];
    stream.read_exact(&mut data).await.unwrap();
    assert_eq!(data, payload);
}

#[tokio::test]
async fn client_cert_cn_auth_reads_the_verified_certificate_never_a_header() {
    let dir = TempDir::new("clientcn");
    let (self_pem, _, _, server_ca) = make_cert(&dir);
    let pki = ClientPki::new();
    let cafile = dir.path("clients-ca.pem");
    std::fs::write(&cafile, &pki.ca_pem).unwrap();
    let target = echo_target().await.to_string();
    let proxy = Proxy::start(&[
        "--cert",
        self_pem.to_str().unwrap(),
        "--verify-client",
        "--cafile",
        cafile.to_str().unwrap(),
        "--auth-plugin",
        "ClientCertCNAuth",
        "--auth-source",
        "alice carol",
        "127.0.0.1:0",
        &target,
    ]);
    let (code, mut tls) = tls_upgrade(proxy.addr, &server_ca, pki.client("alice"), "").await;
    assert_eq!(code, 101);
    tls_echo(&mut tls, b"alice's console").await;
    let (code, _) = tls_upgrade(proxy.addr, &server_ca, pki.client("mallory"), "").await;
    assert_eq!(code, 403);
    let (code, _) = tls_upgrade(
        proxy.addr,
        &server_ca,
        pki.client("mallory"),
        "SSL_CLIENT_S_DN_CN: alice\r\nSSL-Client-S-DN-CN: alice\r\n",
    )
    .await;
    assert_eq!(code, 403, "a header must not stand in for the certificate");
    let (code, mut tls) = tls_upgrade(proxy.addr, &server_ca, pki.client("carol"), "").await;
    assert_eq!(code, 101);
    tls_echo(&mut tls, b"carol's console").await;
}

#[tokio::test]
async fn twenty_failures_a_minute_get_429_for_that_address_only() {
    let dir = TempDir::new("throttle");
    let target = echo_target().await;
    let file = dir.path("tokens");
    std::fs::write(&file, format!("right: {target}\n")).unwrap();
    let proxy = Proxy::start(&[
        "--token-plugin",
        "TokenFile",
        "--token-source",
        file.to_str().unwrap(),
        "127.0.0.1:0",
    ]);
    for guess in 0..20 {
        let (_, head) = Raw::upgrade_to(proxy.addr, &format!("/?token=guess{guess}"), "").await;
        assert_eq!(status(&head), 404, "guess {guess}");
    }
    for _ in 0..3 {
        let (mut raw, head) = Raw::upgrade_to(proxy.addr, "/?token=right", "").await;
        assert_eq!(status(&head), 429, "{head}");
        let retry: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        assert!(raw.read_body(&head).await.contains("try again"));
    }
    // Another address is not affected.
    let other = Raw::connect_from(proxy.addr, "127.0.0.2".parse().unwrap()).await;
    let (mut raw, head) = other
        .send_upgrade("/?token=right", &format!("Host: {}\r\n", proxy.addr))
        .await;
    assert_eq!(status(&head), 101, "{head}");
    raw.echo(b"from another address").await;
    let blocked = proxy.lines().iter().filter(|l| l.contains("answering 429")).count();
    assert_eq!(blocked, 1, "{:#?}", proxy.lines());
}
