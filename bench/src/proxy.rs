//! Proxies under test: `NAME=TEMPLATE` specs, and the lifecycle of one running proxy.
//!
//! A proxy runs in its own process group, so that stopping it also stops whatever it forked
//! (websockify forks a process per connection). Its stdout and stderr are kept, last few KiB
//! only, to explain a failure. Every wait is bounded, and a `Proxy` that is dropped without
//! `stop` (an error, a panic, Ctrl-C) kills its group on the spot.

use std::process::Stdio;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout};

use crate::tokens::TokenSource;

/// The name reserved for the built-in baseline.
pub const NO_PROXY: &str = "no-proxy";
/// The placeholder of a sessions template: the services file.
pub const SERVICES: &str = "{services}";

/// How long a proxy may take to accept its first TCP connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a proxy may take to exit after SIGTERM, then after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How much of a proxy's output is kept for error messages.
const OUTPUT_TAIL: usize = 4096;

/// What a proxy's command template points it at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// `{target}`: the in-process TCP backend, for WebSocket-to-TCP proxies.
    Tcp,
    /// `{ws-target}`: the in-process WebSocket server, for a raw TCP relay such as socat. The
    /// client's frames pass through untouched, so the result is what the extra hop (and a
    /// third process on the machine) costs by itself: the ceiling for any relay in this harness.
    WebSocket,
    /// `{token-file}` or `{redis}` (`--token-proxy` templates): a token source whose tokens all
    /// name the in-process TCP backend; the proxy routes each request by its `?token=`.
    Tokens(TokenSource),
    /// `{services}` (`wsproxy-bench sessions` templates): the services file of wsproxy's
    /// on-demand sessions, which says what to launch for each token the API hands out.
    Services,
}

impl Upstream {
    /// Every kind, with the placeholder that selects it.
    fn placeholders() -> [(&'static str, Upstream); 5] {
        [
            ("{target}", Upstream::Tcp),
            ("{ws-target}", Upstream::WebSocket),
            (TokenSource::File.placeholder(), Upstream::Tokens(TokenSource::File)),
            (TokenSource::Redis.placeholder(), Upstream::Tokens(TokenSource::Redis)),
            (SERVICES, Upstream::Services),
        ]
    }

    fn placeholder(self) -> &'static str {
        Self::placeholders()
            .into_iter()
            .find_map(|(placeholder, upstream)| (upstream == self).then_some(placeholder))
            .unwrap_or_default()
    }
}

/// A proxy under test, from `--proxy NAME=TEMPLATE`.
#[derive(Clone, Debug)]
pub struct ProxySpec {
    pub name: String,
    /// The template as given, for the report.
    pub template: String,
    pub upstream: Upstream,
    /// The template split into words; placeholders are filled in per start.
    words: Vec<String>,
}

impl FromStr for ProxySpec {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let (name, template) = spec.split_once('=').ok_or(
            "expected NAME=COMMAND TEMPLATE, e.g. 'wsproxy=target/release/wsproxy 127.0.0.1:{listen} {target}'",
        )?;
        let name = name.trim();
        if name.is_empty() || name == NO_PROXY || name.contains(char::is_whitespace) {
            return Err(format!("`{name}` cannot be a proxy name"));
        }
        let words = shlex::split(template).ok_or("unbalanced quotes in the command template")?;
        if words.is_empty() {
            return Err("the command template is empty".into());
        }
        let has = |placeholder: &str| words.iter().any(|word| word.contains(placeholder));
        if !has("{listen}") {
            return Err("the command template has no {listen}".into());
        }
        let found: Vec<Upstream> = Upstream::placeholders()
            .into_iter()
            .filter(|(placeholder, _)| has(placeholder))
            .map(|(_, upstream)| upstream)
            .collect();
        let [upstream] = found[..] else {
            return Err(
                "the command template needs exactly one of {target}, {ws-target}, {token-file}, {redis} and {services}"
                    .into(),
            );
        };
        Ok(Self {
            name: name.to_string(),
            template: template.trim().to_string(),
            upstream,
            words,
        })
    }
}

impl ProxySpec {
    /// The command line for one start: `{listen}` is the port, the upstream's placeholder
    /// `upstream` (an address, or the token file's path).
    fn argv(&self, listen: u16, upstream: &str) -> Vec<String> {
        let listen = listen.to_string();
        let placeholder = self.upstream.placeholder();
        self.words
            .iter()
            .map(|word| word.replace("{listen}", &listen).replace(placeholder, upstream))
            .collect()
    }
}

/// A running proxy, listening on 127.0.0.1:`port()`.
pub struct Proxy {
    /// Shown in messages.
    name: String,
    child: Child,
    /// The process group the proxy leads; signals go to all of it.
    group: Pid,
    port: u16,
    /// The last `OUTPUT_TAIL` bytes of the proxy's stdout and stderr, interleaved.
    output: Arc<Mutex<Vec<u8>>>,
    /// Set by `stop`, so that `Drop` does not signal a group id the system may have reused.
    stopped: bool,
}

impl Proxy {
    /// Starts `spec` with `upstream` for its upstream placeholder (the target's address, or the
    /// token source) and waits until it accepts connections.
    pub async fn start(spec: &ProxySpec, upstream: &str) -> Result<Proxy, String> {
        let port = free_port()?;
        let argv = spec.argv(port, upstream);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("{}: cannot run `{}`: {e}", spec.name, argv.join(" ")))?;
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(keep_tail(stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_tail(stderr, output.clone()));
        }
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| format!("{}: exited at once", spec.name))?;
        let mut proxy = Proxy {
            name: spec.name.clone(),
            child,
            group,
            port,
            output,
            stopped: false,
        };
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process group the proxy leads (its pid): the proxy and whatever it forked.
    pub fn group(&self) -> i32 {
        self.group.as_raw()
    }

    /// The proxy's recent output, formatted to follow an error message; empty if it said nothing.
    pub fn output_note(&self) -> String {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&output);
        match text.trim() {
            "" => String::new(),
            text => format!("\n--- last output of {} ---\n{text}", self.name),
        }
    }

    /// Whether the proxy's recent output (the last few KiB) has `text`.
    pub fn said(&self, text: &str) -> bool {
        let output = self.output.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&output).contains(text)
    }

    /// Stops the proxy (SIGTERM to its group, SIGKILL after a grace period) and reaps it.
    pub async fn stop(mut self) -> Result<(), String> {
        self.stopped = true;
        let _ = killpg(self.group, Signal::SIGTERM);
        let exited = match timeout(TERM_GRACE, self.child.wait()).await {
            Ok(_) => true,
            Err(_) => {
                let _ = killpg(self.group, Signal::SIGKILL);
                timeout(KILL_WAIT, self.child.wait()).await.is_ok()
            }
        };
        // Members of the group that outlived their leader (a forked child ignoring SIGTERM).
        let _ = killpg(self.group, Signal::SIGKILL);
        match exited {
            true => Ok(()),
            false => Err(format!("{} did not exit after SIGKILL", self.name)),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the output readers a moment to collect its last words.
                sleep(Duration::from_millis(100)).await;
                return Err(format!(
                    "{} exited ({status}) before accepting connections{}",
                    self.name,
                    self.output_note()
                ));
            }
            // The probe connection closes without a handshake; proxies log it and move on.
            if let Ok(Ok(_)) = timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", self.port))).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not accept connections on 127.0.0.1:{} within {} s{}",
                    self.name,
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.output_note()
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = killpg(self.group, Signal::SIGKILL);
        }
    }
}

/// A port on 127.0.0.1 that was free a moment ago. Another process could take it before the proxy
/// (or redis-server) binds it; that is rare on a benchmark machine, and the start then fails with
/// a clear message.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// Copies `pipe` into `tail`, keeping only the last `OUTPUT_TAIL` bytes.
async fn keep_tail(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        tail.extend_from_slice(&buf[..n]);
        let excess = tail.len().saturating_sub(OUTPUT_TAIL);
        tail.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_is_split_like_a_shell_would_and_filled_in() {
        let spec: ProxySpec = "ws=bin/p --x 'a b' 127.0.0.1:{listen} {target}".parse().unwrap();
        assert_eq!((spec.name.as_str(), spec.upstream), ("ws", Upstream::Tcp));
        assert_eq!(
            spec.argv(80, "127.0.0.1:9"),
            ["bin/p", "--x", "a b", "127.0.0.1:80", "127.0.0.1:9"]
        );
    }

    #[test]
    fn a_raw_relay_points_at_the_websocket_server() {
        let spec: ProxySpec = "socat=socat TCP-LISTEN:{listen} TCP:{ws-target}".parse().unwrap();
        assert_eq!(spec.upstream, Upstream::WebSocket);
        assert_eq!(
            spec.argv(80, "127.0.0.1:9"),
            ["socat", "TCP-LISTEN:80", "TCP:127.0.0.1:9"]
        );
    }

    #[test]
    fn a_token_template_names_its_source() {
        let spec: ProxySpec = "p=p --token-source {token-file} 127.0.0.1:{listen}".parse().unwrap();
        assert_eq!(spec.upstream, Upstream::Tokens(TokenSource::File));
        assert_eq!(
            spec.argv(80, "/t/tokens.conf"),
            ["p", "--token-source", "/t/tokens.conf", "127.0.0.1:80"]
        );
        let spec: ProxySpec = "p=p --token-source {redis} 127.0.0.1:{listen}".parse().unwrap();
        assert_eq!(spec.upstream, Upstream::Tokens(TokenSource::Redis));
        let spec: ProxySpec = "p=p --sessions {services} 127.0.0.1:{listen}".parse().unwrap();
        assert_eq!(spec.upstream, Upstream::Services);
        assert_eq!(
            spec.argv(80, "/t/services.toml"),
            ["p", "--sessions", "/t/services.toml", "127.0.0.1:80"]
        );
    }

    #[test]
    fn bad_specs_are_refused() {
        for bad in [
            "no equals sign",
            "=p {listen} {target}",
            "no-proxy=p {listen} {target}",
            "x=p {target}",
            "x=p {listen}",
            "x=p {listen} {target} {ws-target}",
            "x=p {listen} {target} {token-file}",
            "x=p {listen} {token-file} {redis}",
            "x=p {listen} {target} {services}",
            "x=",
        ] {
            assert!(bad.parse::<ProxySpec>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_proxy_that_exits_at_once_is_reported_with_its_output() {
        let spec: ProxySpec = "sh=sh -c 'echo oops-{listen} >&2; exit 3' {target}".parse().unwrap();
        let err = Proxy::start(&spec, "127.0.0.1:9").await.err().unwrap();
        assert!(err.contains("exited") && err.contains("oops-"), "{err}");
    }
}
