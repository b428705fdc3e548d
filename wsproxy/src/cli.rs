//! The command line, as websockify spells it. This is the only clap type: `config.rs` turns it into
//! a validated `Config`, and nothing past `main` sees clap.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "wsproxy",
    version,
    about = "WebSocket to TCP/UNIX-socket proxy, command-line compatible with websockify",
    override_usage = "wsproxy [options] [source_addr:]source_port target_addr:target_port\n       \
                      wsproxy [options] --unix-target FILE [source_addr:]source_port\n       \
                      wsproxy [options] --unix-listen FILE target_addr:target_port\n       \
                      wsproxy [options] [source_addr:]source_port -- WRAP_COMMAND_LINE",
    after_help = "Examples:\n  wsproxy 6080 localhost:5901\n  wsproxy [::1]:6080 host:5901\n  \
                  wsproxy --unix-target /run/qemu/vnc.sock 6080\n  \
                  wsproxy --unix-listen /run/ws.sock --unix-listen-mode 0660 localhost:5901\n  \
                  wsproxy --web ./web --cert self.pem 6080 localhost:5901"
)]
pub struct Cli {
    /// [source_addr:]source_port to listen on (omitted with --unix-listen or --inetd), then
    /// target_addr:target_port (omitted with --unix-target or a wrapped command)
    #[arg(value_name = "ADDRESSES")]
    pub positional: Vec<String>,

    /// Command to start and proxy to (wrap mode)
    #[arg(last = true, value_name = "WRAP_COMMAND_LINE")]
    pub wrap_command: Vec<String>,

    /// Verbose messages (debug level, HTTP request lines)
    #[arg(short, long)]
    pub verbose: bool,

    /// Per-frame traffic legend on stdout: } client frame in, > to target, { target data in, < to client
    #[arg(long)]
    pub traffic: bool,

    /// Record each session to FILE.<connection id> (noVNC's playback format), or FILE.<id>.cast
    /// with --record-format asciicast
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Format of --record files: novnc (noVNC's playback, for desktops), asciicast (asciicast v2 of
    /// what the target sent, for terminals: asciinema plays it), asciicast-with-input (also what the
    /// client typed, passwords included)
    #[arg(long, value_enum, default_value_t = RecordFormat::Novnc, requires = "record")]
    pub record_format: RecordFormat,

    /// List and serve the --record files at /recordings/ for web/replay.html (needs --web; behind
    /// --web-auth like the pages)
    #[arg(long, requires_all = ["record", "web"])]
    pub serve_recordings: bool,

    /// Become a daemon (background process)
    #[arg(short = 'D', long)]
    pub daemon: bool,

    /// Exit after the first WebSocket session ends
    #[arg(long)]
    pub run_once: bool,

    /// After TIMEOUT seconds, stop accepting and exit once no session is open (0 = never)
    #[arg(long, value_name = "TIMEOUT", default_value_t = 0)]
    pub timeout: u64,

    /// Exit after TIMEOUT seconds with no open session (0 = never)
    #[arg(long, value_name = "TIMEOUT", default_value_t = 0)]
    pub idle_timeout: u64,

    /// PEM certificate (and key, unless --key) for wss:// and https://; default ./self.pem if it exists.
    /// `auto`: a self-signed certificate made at the first start and kept in --cert-dir
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// With --cert auto: a name (or address) the certificate is for; repeat for more (default: the
    /// host name, localhost, 127.0.0.1, ::1 and the listen address)
    #[arg(long, value_name = "NAME")]
    pub cert_name: Vec<String>,

    /// With --cert auto: where the certificate is kept (default $XDG_STATE_HOME/wsproxy or
    /// ~/.local/state/wsproxy)
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,

    /// PEM private key, if not in the --cert file
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Password of an encrypted PKCS#8 private key
    #[arg(long, value_name = "PASSWORD")]
    pub key_password: Option<String>,

    /// Refuse plain ws:// and http:// clients
    #[arg(long)]
    pub ssl_only: bool,

    /// Speak TLS to the target (system CA roots, or --target-cafile)
    #[arg(long)]
    pub ssl_target: bool,

    /// Trust only the CA certificates in FILE for TLS to the target: --ssl-target, wss:// targets (websockify#506)
    #[arg(long, value_name = "FILE")]
    pub target_cafile: Option<PathBuf>,

    /// Require a client certificate signed by --cafile (or the system roots)
    #[arg(long)]
    pub verify_client: bool,

    /// CA bundle for --verify-client
    #[arg(long, value_name = "FILE")]
    pub cafile: Option<PathBuf>,

    /// Minimum TLS version for clients
    #[arg(long, value_enum, default_value_t = SslVersion::Default)]
    pub ssl_version: SslVersion,

    /// Allowed TLS cipher suites (OpenSSL or IANA names, colon-separated)
    #[arg(long, value_name = "CIPHERS")]
    pub ssl_ciphers: Option<String>,

    /// Listen on a UNIX socket instead of a TCP port
    #[arg(long, value_name = "FILE")]
    pub unix_listen: Option<PathBuf>,

    /// Permissions of the --unix-listen socket, octal
    #[arg(long, value_name = "MODE", default_value = "0600")]
    pub unix_listen_mode: String,

    /// Connect to a UNIX socket target instead of host:port
    #[arg(long, value_name = "FILE")]
    pub unix_target: Option<PathBuf>,

    /// The target speaks WebSocket itself (QEMU's websocket=on sockets): wsproxy does the client
    /// handshake (path /, subprotocol binary) and relays message payloads
    #[arg(long)]
    pub target_websocket: bool,

    /// Use the socket on stdin (from inetd or systemd): a listening socket, or one connection
    #[arg(long)]
    pub inetd: bool,

    /// Serve static files from DIR on the same port
    #[arg(long, value_name = "DIR")]
    pub web: Option<PathBuf>,

    /// Put the static files behind --auth-plugin too
    #[arg(long)]
    pub web_auth: bool,

    /// Do not list directories (404 instead)
    #[arg(long)]
    pub file_only: bool,

    /// What to do when the wrapped command (`-- CMD ARGS`) exits: exit with its code, ignore it
    /// (for daemonizing servers such as vncserver), or respawn it (at most 3 starts in 10 s, then
    /// backoff). The command's stdin, stdout and stderr are inherited: its output appears where
    /// wsproxy's does.
    #[arg(long, value_enum)]
    pub wrap_mode: Option<WrapMode>,

    /// The port the wrapped command binds (moved to loopback); default: the port wsproxy listens on.
    /// Required with --unix-listen and --inetd, which have no port
    #[arg(long, value_name = "PORT")]
    pub wrap_port: Option<u16>,

    /// Listen on IPv6 (::) rather than IPv4 when no source address is given
    #[arg(short = '6', long)]
    pub prefer_ipv6: bool,

    /// Accepted for compatibility; wsproxy has a single server implementation
    #[arg(long, hide = true)]
    pub libserver: bool,

    /// Deprecated websockify alias of --token-plugin TokenFile --token-source FILE
    #[arg(long, value_name = "FILE")]
    pub target_config: Option<String>,

    /// Token plugin naming each request's target: ReadOnlyTokenFile, TokenFile, TokenFileName,
    /// BaseTokenAPI, JSONTokenApi, JWTTokenApi, TokenRedis, UnixDomainSocketDirectory (or
    /// websockify's dotted websockify.token_plugins.NAME); no target address is needed then
    #[arg(long, value_name = "CLASS")]
    pub token_plugin: Option<String>,

    /// The token plugin's source: a file or directory, a URL with %s, a key file, or
    /// host[:port[:db[:password[:namespace]]]] for TokenRedis
    #[arg(long, value_name = "ARG")]
    pub token_source: Option<String>,

    /// Take the token from the Host header (without its port) instead of ?token=
    #[arg(long)]
    pub host_token: bool,

    /// Seconds a token source (token API, Redis) has to answer before the client gets 503
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub token_timeout: u64,

    /// Authentication plugin: BasicHTTPAuth, ExpectOrigin, ClientCertCNAuth (or
    /// websockify.auth_plugins.NAME)
    #[arg(long, value_name = "CLASS")]
    pub auth_plugin: Option<String>,

    /// The auth plugin's source: user:password or @HTPASSWD_FILE (bcrypt), allowed origins, or
    /// allowed client-certificate common names (space-separated)
    #[arg(long, value_name = "ARG")]
    pub auth_source: Option<String>,

    /// On-demand sessions: the services FILE (TOML) says what may be launched; a REST API under
    /// /api/v1/ reserves sessions, and the first connection with a session's token launches it
    #[arg(long, value_name = "FILE")]
    pub sessions: Option<PathBuf>,

    /// Serve the sessions API on ADDR (host:port) instead of the main port
    #[arg(long, value_name = "ADDR", requires = "sessions")]
    pub api_listen: Option<String>,

    /// With a shared session store: the HOST:PORT other instances reach this one at, to forward
    /// clients of the sessions it launched (default: the listening address, if not a wildcard)
    #[arg(long, value_name = "ADDR", requires = "sessions")]
    pub advertise: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (host:port; port 0 picks one), or with
    /// `same-port` at /metrics on the main port (behind the API's bearer tokens with --sessions)
    #[arg(long, value_name = "ADDR|same-port")]
    pub metrics: Option<String>,

    /// Append one JSON line per session event to FILE (reserve, launch, ready, connect, ...)
    #[arg(long, value_name = "FILE", requires = "sessions")]
    pub audit_log: Option<PathBuf>,

    /// Shared consoles: sessions to the same target share one target connection; every window
    /// sees all output (a late one first gets the last 64 KiB), any window's input goes to the
    /// target, a window more than 1 MiB behind is closed with 1008
    #[arg(long)]
    pub share: bool,

    /// Keep a shared target connection open when its last window leaves
    #[arg(long)]
    pub share_keep: bool,

    /// On a shared connection only the oldest open window types; the others' input is dropped
    #[arg(long)]
    pub share_view_only: bool,

    /// Ping the client every INTERVAL seconds; close sessions that stop answering (0 = off)
    #[arg(long, value_name = "INTERVAL", default_value_t = 0)]
    pub heartbeat: u64,

    /// Also write log messages to FILE
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Also log to syslog: HOST:PORT (UDP) or a UNIX socket path such as /dev/log
    #[arg(long, value_name = "SERVER")]
    pub syslog: Option<String>,

    /// Use the legacy BSD syslog format instead of RFC 5424
    #[arg(long)]
    pub legacy_syslog: bool,

    /// Most sessions open at once (default: what the file-descriptor limit allows)
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Seconds a client has to finish TLS and send its HTTP request
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Largest WebSocket message accepted from a client, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20)]
    pub max_message_size: u64,

    /// Seconds sessions get to close cleanly on SIGINT/SIGTERM
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub shutdown_grace: u64,

    /// Event loops, one per thread, sharing the port (default: 1 on up to 2 cores, else one per
    /// core, at most 16)
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SslVersion {
    Default,
    #[value(name = "tlsv1_1")]
    Tlsv11,
    #[value(name = "tlsv1_2")]
    Tlsv12,
    #[value(name = "tlsv1_3")]
    Tlsv13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WrapMode {
    Exit,
    Ignore,
    Respawn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    Novnc,
    Asciicast,
    AsciicastWithInput,
}
