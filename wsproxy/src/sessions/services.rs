//! The services file (`--sessions FILE`): what may be launched, how, and who may ask.
//!
//! TOML as documented in the README; every key is read and any other is a one-line error naming
//! it. The seed system's JSON file (`{"Name": {"script": PATH, "count": N, "options": {...}}}`) is
//! read too: the script runs as `PATH start INDEX`, the options reach it as JSON in
//! `WSPROXY_OPTIONS`, and it is found through librebind.so on port 5900+INDEX.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

/// Everything the file says, checked.
#[derive(Debug, Clone)]
pub struct Services {
    pub timing: Timing,
    /// `[sessions] seed_services`: a JSON services file to add (resolved by `load`).
    pub seed_services: Option<String>,
    /// `[sessions] store`: the Redis URL several instances share the pool through.
    pub store: Option<String>,
    pub api_tokens: Vec<ApiToken>,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A session never connected is expired after this.
    pub reserve_timeout: Duration,
    /// Launch to listening, else the session fails.
    pub start_timeout: Duration,
    /// After the last client leaves, the session may be re-attached this long.
    pub linger: Duration,
    /// SIGTERM to the group, then SIGKILL after this.
    pub stop_grace: Duration,
}

#[derive(Clone)]
pub struct ApiToken {
    /// SHA-256 of the bearer token: the file may hold either, memory holds only this.
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    pub user: String,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("user", &self.user)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything, everyone's sessions.
    Admin,
    /// Create sessions and see one's own.
    Sessions,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub count: u32,
    /// 0: no limit per user.
    pub per_user: u32,
    /// `None`: every API user may reserve it.
    pub groups: Option<Vec<String>>,
    pub command: Vec<String>,
    pub display: Option<Expr>,
    pub port: Option<Expr>,
    pub target: TargetRule,
    pub secret: Option<SecretKind>,
    pub page: Page,
    pub options: BTreeMap<String, OptionRule>,
    /// The seed's JSON services pass the options as JSON in `WSPROXY_OPTIONS`.
    pub options_env: bool,
    /// Where the command may run (placement picks one per session); empty: here.
    pub hosts: Vec<Host>,
    /// The prefix that runs the command on the chosen host (`ssh ... {address} --`).
    pub launcher: Vec<String>,
    /// `share = true`: the clients of a session share one target connection (`crate::share`).
    pub share: bool,
}

/// A host a service's commands may be launched on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub address: String,
    /// Relative share of new sessions; 0 drains the host (running sessions stay).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// 8 random characters, also written as a VNC password file at `{secret_file}`.
    VncPassword,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Page {
    Vnc,
    Telnet,
    Serial,
}

impl Page {
    pub fn file(self) -> &'static str {
        match self {
            Page::Vnc => "vnc.html",
            Page::Telnet => "telnet.html",
            Page::Serial => "serial.html",
        }
    }
}

/// How wsproxy finds what to relay to once the command runs.
#[derive(Debug, Clone)]
pub enum TargetRule {
    /// The command binds `{port}`; librebind.so moves it to a loopback port and reports it.
    Rebind,
    /// `HOST:PORT` (placeholders allowed), connected to once it accepts; also a target that speaks
    /// WebSocket, `ws://HOST:PORT/PATH`, `wss://...` or `ws+unix:PATH[:/REQUEST-PATH]`
    /// (`crate::ws_target`; parsed by `config::parse_target` once placeholders are filled in).
    Tcp(String),
    /// `unix:PATH` (placeholders allowed).
    Unix(String),
    /// A line the command prints names `host` and `port` (named groups).
    Announce(Regex),
}

#[derive(Debug, Clone)]
pub struct OptionRule {
    pub default: String,
    pub pattern: Regex,
}

/// `N`, `{index}` or `N+{index}` (terms joined by `+`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    constant: u64,
    plus_index: bool,
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut expr = Expr {
            constant: 0,
            plus_index: false,
        };
        for term in text.split('+').map(str::trim) {
            if term == "{index}" && !expr.plus_index {
                expr.plus_index = true;
            } else {
                let n: u64 = term
                    .parse()
                    .map_err(|_| format!("{text:?} must be a number, {{index}}, or N+{{index}}"))?;
                expr.constant = expr
                    .constant
                    .checked_add(n)
                    .ok_or_else(|| format!("{text:?} is too large"))?;
            }
        }
        Ok(expr)
    }

    /// The value for `index`; one too large for a port or display is refused where it is used.
    pub fn eval(&self, index: u32) -> u64 {
        self.constant
            .saturating_add(if self.plus_index { u64::from(index) } else { 0 })
    }
}

/// The placeholders a command, target or path may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "index",
    "port",
    "display",
    "session",
    "user",
    "runtime_dir",
    "secret_file",
    "host",
    "address",
];

// The file as written; `deny_unknown_fields` makes any other key an error that names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    sessions: TimingFile,
    #[serde(default)]
    api: ApiFile,
    #[serde(default)]
    service: Vec<ServiceFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimingFile {
    #[serde(default = "default_reserve")]
    reserve_timeout: u64,
    #[serde(default = "default_start")]
    start_timeout: u64,
    #[serde(default)]
    linger: u64,
    #[serde(default = "default_grace")]
    stop_grace: u64,
    /// The seed system's JSON services file, added to the `[[service]]`s (relative to this file).
    seed_services: Option<String>,
    /// `redis://HOST:PORT/DB?namespace=NAME`: share the pool with other instances.
    store: Option<String>,
}

impl Default for TimingFile {
    fn default() -> Self {
        TimingFile {
            reserve_timeout: default_reserve(),
            start_timeout: default_start(),
            linger: 0,
            stop_grace: default_grace(),
            seed_services: None,
            store: None,
        }
    }
}

fn default_reserve() -> u64 {
    300
}
fn default_start() -> u64 {
    30
}
fn default_grace() -> u64 {
    5
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApiFile {
    #[serde(default)]
    token: Vec<ApiTokenFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiTokenFile {
    token: Option<String>,
    token_sha256: Option<String>,
    scopes: Vec<Scope>,
    user: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    count: u32,
    #[serde(default)]
    per_user: u32,
    groups: Option<Vec<String>>,
    command: Vec<String>,
    display: Option<String>,
    port: Option<String>,
    target: TargetFile,
    secret: Option<SecretKind>,
    #[serde(default = "default_page")]
    page: Page,
    #[serde(default)]
    options: BTreeMap<String, OptionFile>,
    #[serde(default)]
    hosts: Vec<Host>,
    #[serde(default)]
    launcher: Vec<String>,
    #[serde(default)]
    share: bool,
}

fn default_page() -> Page {
    Page::Vnc
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TargetFile {
    Text(String),
    Announce(AnnounceFile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnounceFile {
    announce: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionFile {
    default: String,
    pattern: Option<String>,
}

/// What an option without a pattern may hold: short, and nothing a program could take as syntax.
const DEFAULT_OPTION_PATTERN: &str = r"^[A-Za-z0-9._:,x+-]{0,64}$";

/// Reads and checks the services file: TOML, or the seed's JSON when it starts with `{`.
pub fn load(path: &Path) -> Result<Services, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --sessions {}: {e}", path.display()))?;
    let parsed = if text.trim_start().starts_with('{') {
        from_json(&text)
    } else {
        parse(&text).and_then(|mut services| {
            if let Some(seed) = &services.seed_services {
                let seed = path.parent().unwrap_or(Path::new("/")).join(seed);
                let json = std::fs::read_to_string(&seed)
                    .map_err(|e| format!("cannot read seed_services {}: {e}", seed.display()))?;
                let added = from_json(&json).map_err(|e| format!("seed_services {}: {e}", seed.display()))?;
                services.services.extend(added.services);
                check_names(&services.services)?;
            }
            Ok(services)
        })
    };
    let services = parsed.map_err(|e| format!("--sessions {}: {e}", path.display()))?;
    if services.api_tokens.is_empty() {
        tracing::warn!(
            "--sessions {}: no [[api.token]]: the API refuses every call, so nothing can be reserved",
            path.display()
        );
    }
    Ok(services)
}

pub fn parse(text: &str) -> Result<Services, String> {
    let file: File = toml::from_str(text).map_err(|e| one_line(&e.to_string()))?;
    let timing = Timing {
        reserve_timeout: Duration::from_secs(file.sessions.reserve_timeout),
        start_timeout: Duration::from_secs(file.sessions.start_timeout.max(1)),
        linger: Duration::from_secs(file.sessions.linger),
        stop_grace: Duration::from_secs(file.sessions.stop_grace),
    };
    let mut api_tokens = Vec::new();
    for (i, token) in file.api.token.into_iter().enumerate() {
        let sha256 = match (&token.token, &token.token_sha256) {
            (Some(plain), None) if !plain.is_empty() => sha256(plain.as_bytes()),
            (None, Some(hex)) => parse_hex32(hex)
                .ok_or_else(|| format!("[[api.token]] number {}: token_sha256 must be 64 hex digits", i + 1))?,
            _ => {
                return Err(format!(
                    "[[api.token]] number {}: give exactly one of token and token_sha256",
                    i + 1
                ));
            }
        };
        if token.scopes.is_empty() {
            return Err(format!("[[api.token]] of user {:?}: scopes is empty", token.user));
        }
        api_tokens.push(ApiToken {
            sha256,
            scopes: token.scopes,
            user: token.user,
            groups: token.groups,
        });
    }
    let mut services = Vec::new();
    for s in file.service {
        services.push(service(s)?);
    }
    check_names(&services)?;
    Ok(Services {
        timing,
        seed_services: file.sessions.seed_services,
        store: file.sessions.store,
        api_tokens,
        services,
    })
}

fn service(s: ServiceFile) -> Result<Service, String> {
    let name = s.name.clone();
    let err = |why: String| format!("service {name:?}: {why}");
    if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(err("name must be letters, digits, '-', '_' or '.'".into()));
    }
    if s.count == 0 {
        return Err(err("count must be at least 1".into()));
    }
    if s.command.is_empty() {
        return Err(err("command is empty".into()));
    }
    let target = match s.target {
        TargetFile::Text(t) if t == "rebind" => TargetRule::Rebind,
        TargetFile::Text(t) => match t.strip_prefix("unix:") {
            Some(path) => TargetRule::Unix(path.to_owned()),
            None if t.contains(':') => TargetRule::Tcp(t),
            None => {
                return Err(err(format!(
                    "target {t:?} must be \"rebind\", \"HOST:PORT\", \"unix:PATH\", \"ws://HOST:PORT/\", \"ws+unix:PATH\" or \
                     {{ announce = 'REGEX' }}"
                )));
            }
        },
        TargetFile::Announce(a) => {
            let regex = Regex::new(&a.announce).map_err(|e| err(format!("announce: {}", one_line(&e.to_string()))))?;
            let names: Vec<&str> = regex.capture_names().flatten().collect();
            if !names.contains(&"host") || !names.contains(&"port") {
                return Err(err(
                    "announce needs the named groups (?P<host>...) and (?P<port>...)".into()
                ));
            }
            TargetRule::Announce(regex)
        }
    };
    if matches!(target, TargetRule::Rebind) && s.port.is_none() {
        return Err(err(
            "target = \"rebind\" needs port = \"N+{index}\": the port the command binds".into(),
        ));
    }
    check_hosts(&s.hosts, &s.launcher, &target).map_err(err)?;
    let mut options = BTreeMap::new();
    for (key, option) in s.options {
        let pattern = option.pattern.as_deref().unwrap_or(DEFAULT_OPTION_PATTERN);
        let pattern = Regex::new(pattern).map_err(|e| err(format!("option {key}: {}", one_line(&e.to_string()))))?;
        if !pattern.is_match(&option.default) {
            return Err(err(format!("option {key}: the default does not match the pattern")));
        }
        options.insert(
            key,
            OptionRule {
                default: option.default,
                pattern,
            },
        );
    }
    let service = Service {
        display: s.display.as_deref().map(Expr::parse).transpose().map_err(err)?,
        port: s.port.as_deref().map(Expr::parse).transpose().map_err(err)?,
        name: s.name,
        count: s.count,
        per_user: s.per_user,
        groups: s.groups,
        command: s.command,
        target,
        secret: s.secret,
        page: s.page,
        options,
        options_env: false,
        hosts: s.hosts,
        launcher: s.launcher,
        share: s.share,
    };
    for text in service.templates() {
        check_placeholders(text, &service).map_err(err)?;
    }
    Ok(service)
}

impl Service {
    /// Every text that takes placeholders.
    fn templates(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = self.command.iter().chain(&self.launcher).map(String::as_str).collect();
        match &self.target {
            TargetRule::Tcp(t) | TargetRule::Unix(t) => texts.push(t),
            TargetRule::Rebind | TargetRule::Announce(_) => {}
        }
        texts
    }
}

/// Host names are unique names, a launcher goes with hosts, and librebind.so cannot follow a
/// command to another host.
fn check_hosts(hosts: &[Host], launcher: &[String], target: &TargetRule) -> Result<(), String> {
    for (i, host) in hosts.iter().enumerate() {
        if host.name.is_empty()
            || !host
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "host name {:?} must be letters, digits, '-', '_' or '.'",
                host.name
            ));
        }
        if host.weight > 1000 {
            return Err(format!("host {:?}: weight must be 0 to 1000", host.name));
        }
        if host.address.is_empty() {
            return Err(format!("host {:?} has no address", host.name));
        }
        if hosts[..i].iter().any(|h| h.name == host.name) {
            return Err(format!("host {:?} is listed twice", host.name));
        }
    }
    if !launcher.is_empty() && hosts.is_empty() {
        return Err("launcher = [...] needs hosts = [...] to launch on".into());
    }
    if !launcher.is_empty() && matches!(target, TargetRule::Rebind) {
        return Err("target = \"rebind\" cannot follow a command started through a launcher; use \"{address}:PORT\" or announce".into());
    }
    Ok(())
}

/// Every `{name}` must be a known placeholder (or `{opt.NAME}` of a declared option); `{{` is `{`.
fn check_placeholders(text: &str, service: &Service) -> Result<(), String> {
    for name in placeholders(text)? {
        let known = match name.strip_prefix("opt.") {
            Some(option) => service.options.contains_key(option),
            None => PLACEHOLDERS.contains(&name),
        };
        if !known {
            return Err(format!("unknown placeholder {{{name}}} in {text:?}"));
        }
        if name == "display" && service.display.is_none() || name == "port" && service.port.is_none() {
            return Err(format!("{{{name}}} is used but the service has no {name} = \"...\""));
        }
        if (name == "host" || name == "address") && service.hosts.is_empty() {
            return Err(format!("{{{name}}} is used but the service has no hosts = [...]"));
        }
        if name == "secret_file" && service.secret.is_none() {
            return Err("{secret_file} is used but the service has no secret = \"vnc-password\"".into());
        }
    }
    Ok(())
}

/// The placeholder names in `text`.
pub fn placeholders(text: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        if let Some(stripped) = after.strip_prefix('{') {
            rest = stripped;
            continue;
        }
        let close = after.find('}').ok_or_else(|| format!("unclosed {{ in {text:?}"))?;
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    Ok(names)
}

/// Replaces each `{name}` by `value(name)`; `{{` and `}}` stand for braces.
pub fn substitute(text: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(['{', '}']) {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        if rest[open..].starts_with("{{") || rest[open..].starts_with("}}") {
            out.push_str(&rest[open..=open]);
            rest = &after[1..];
        } else if rest[open..].starts_with('{') {
            match after.find('}') {
                Some(close) => {
                    out.push_str(&value(&after[..close]));
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str(&rest[open..]);
                    rest = "";
                }
            }
        } else {
            out.push('}');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn check_names(services: &[Service]) -> Result<(), String> {
    for (i, s) in services.iter().enumerate() {
        if services[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("service {:?} is defined twice", s.name));
        }
    }
    Ok(())
}

/// The seed system's JSON: `{"Name": {"script": PATH, "count": N, "options": {...}}}`.
pub fn from_json(text: &str) -> Result<Services, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Seed {
        script: String,
        count: u32,
        #[serde(default)]
        options: BTreeMap<String, serde_json::Value>,
    }
    let seeds: BTreeMap<String, Seed> = serde_json::from_str(text).map_err(|e| format!("JSON: {e}"))?;
    let mut services = Vec::new();
    for (name, seed) in seeds {
        let mut options = BTreeMap::new();
        for (key, value) in seed.options {
            let (default, pattern) = match value {
                serde_json::Value::String(s) => (s, None),
                serde_json::Value::Number(n) => (n.to_string(), None),
                serde_json::Value::Object(o) => (
                    o.get("default").map(json_text).unwrap_or_default(),
                    o.get("pattern").and_then(|p| p.as_str()).map(str::to_owned),
                ),
                other => {
                    return Err(format!(
                        "service {name:?}: option {key} = {other} is not a string or an object"
                    ));
                }
            };
            options.insert(key, OptionFile { default, pattern });
        }
        let mut service = service(ServiceFile {
            name,
            count: seed.count,
            per_user: 0,
            groups: None,
            command: vec![seed.script, "start".into(), "{index}".into()],
            display: None,
            port: Some("5900+{index}".into()),
            target: TargetFile::Text("rebind".into()),
            secret: None,
            page: Page::Vnc,
            options,
            hosts: Vec::new(),
            launcher: Vec::new(),
            share: false,
        })?;
        service.options_env = true;
        services.push(service);
    }
    Ok(Services {
        timing: parse("")?.timing,
        seed_services: None,
        store: None,
        api_tokens: Vec::new(),
        services,
    })
}

fn json_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The digest API tokens are compared by.
pub fn token_digest(token: &str) -> [u8; 32] {
    sha256(token.as_bytes())
}

/// toml's messages span lines (with a caret drawing); keep the first meaningful lines on one.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| "|^ ".contains(c)) && !l.contains('|'))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[sessions]
reserve_timeout = 300
start_timeout = 30
linger = 0
stop_grace = 5

[[api.token]]
token = "admin-secret"
scopes = ["admin"]
user = "root"

[[api.token]]
token_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
scopes = ["sessions"]
user = "alice"
groups = ["staff"]

[[service]]
name = "desktop"
count = 2
per_user = 1
groups = ["staff"]
command = ["Xvnc", ":{display}", "-rfbport", "{port}", "-rfbauth", "{secret_file}", "-geometry", "{opt.geometry}"]
display = "20+{index}"
port = "5900+{index}"
target = "rebind"
secret = "vnc-password"
page = "vnc"
[service.options.geometry]
default = "1280x800"
pattern = '^\d{3,4}x\d{3,4}$'

[[service]]
name = "qemu"
count = 1
command = ["qemu-system-x86_64", "-chardev", "socket,id=m,path={runtime_dir}/mon.sock,server=on,wait=off"]
target = "unix:{runtime_dir}/mon.sock"
page = "serial"

[[service]]
name = "job"
count = 3
command = ["/opt/job/start", "{session}"]
target = { announce = 'PA_REMOTE_CONNECTION;[^;]*;vnc;(?P<host>[^:;]+):(?P<port>\d+)' }
"#;

    #[test]
    fn the_documented_example_reads() {
        let s = parse(EXAMPLE).unwrap();
        assert_eq!(s.timing.start_timeout, Duration::from_secs(30));
        assert_eq!(s.api_tokens.len(), 2);
        assert_eq!(s.api_tokens[0].sha256, token_digest("admin-secret"));
        assert_eq!(s.api_tokens[1].sha256, token_digest("secret"));
        let desktop = &s.services[0];
        assert_eq!(desktop.display.as_ref().unwrap().eval(1), 21);
        assert_eq!(desktop.port.as_ref().unwrap().eval(1), 5901);
        assert!(desktop.options["geometry"].pattern.is_match("1920x1080"));
        assert!(!desktop.options["geometry"].pattern.is_match("1920x1080;rm"));
        assert!(matches!(s.services[1].target, TargetRule::Unix(_)));
        assert!(matches!(s.services[2].target, TargetRule::Announce(_)));
    }

    #[test]
    fn mistakes_name_the_key() {
        for (text, needle) in [
            ("[sessions]\nlingr = 3\n", "lingr"),
            (
                "[[service]]\nname = \"a\"\ncount = 1\ncommand = [\"x\"]\ntarget = \"rebind\"\n",
                "port",
            ),
            (
                "[[service]]\nname = \"a\"\ncount = 1\ncommand = [\"x\", \"{nope}\"]\ntarget = \"h:1\"\n",
                "{nope}",
            ),
            (
                "[[service]]\nname = \"a\"\ncount = 0\ncommand = [\"x\"]\ntarget = \"h:1\"\n",
                "count",
            ),
            (
                "[[service]]\nname = \"a\"\ncount = 1\ncommand = [\"x\"]\ntarget = \"h:1\"\ncolour = 1\n",
                "colour",
            ),
            ("[[api.token]]\nscopes = [\"admin\"]\nuser = \"u\"\n", "token"),
            (
                "[[api.token]]\ntoken = \"t\"\nscopes = [\"root\"]\nuser = \"u\"\n",
                "root",
            ),
            (
                "[[service]]\nname = \"a\"\ncount = 1\ncommand = [\"x\"]\ntarget = { announce = '(?P<host>x)' }\n",
                "port",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn placeholders_and_substitution() {
        assert_eq!(placeholders("a{x}b{{c}}{opt.y}").unwrap(), vec!["x", "opt.y"]);
        assert!(placeholders("{open").is_err());
        let out = substitute("-{index}-{{lit}}-{opt.g}", |name| format!("<{name}>"));
        assert_eq!(out, "-<index>-{lit}-<opt.g>");
        assert_eq!(Expr::parse("5900+{index}").unwrap().eval(3), 5903);
        assert_eq!(Expr::parse("{index}").unwrap().eval(3), 3);
        assert!(Expr::parse("x+1").is_err());
        // Found by the services_file fuzz target: an overflow panicked in debug builds.
        assert!(Expr::parse("18446744073709551615+1").is_err());
        assert_eq!(Expr::parse("18446744073709551615+{index}").unwrap().eval(1), u64::MAX);
    }

    #[test]
    fn hosts_and_launchers() {
        let base =
            "[[service]]\nname = \"d\"\ncount = 2\ncommand = [\"x\", \"{address}\"]\ntarget = \"{address}:5901\"\n";
        let hosts = "hosts = [{ name = \"b1\", address = \"10.0.0.5\", weight = 2 }, { name = \"b2\", address = \"10.0.0.6\" }]\n";
        let launcher = "launcher = [\"ssh\", \"{address}\", \"--\"]\n";
        let ok = parse(&format!("{base}{hosts}{launcher}")).unwrap();
        let d = &ok.services[0];
        assert_eq!(
            d.hosts.iter().map(|h| (h.name.as_str(), h.weight)).collect::<Vec<_>>(),
            [("b1", 2), ("b2", 1)]
        );
        assert_eq!(d.launcher, ["ssh", "{address}", "--"]);
        for (text, why) in [
            (base.to_owned(), "{address} is used but the service has no hosts"),
            (format!("{base}{launcher}hosts = []\n"), "launcher = [...] needs hosts"),
            (
                format!("{base}hosts = [{{ name = \"b\", address = \"a\" }}, {{ name = \"b\", address = \"c\" }}]\n"),
                "listed twice",
            ),
            (
                format!("{base}hosts = [{{ name = \"b 1\", address = \"a\" }}]\n"),
                "host name",
            ),
            (
                format!("{base}hosts = [{{ name = \"b\", address = \"a\", cores = 4 }}]\n"),
                "unknown field `cores`",
            ),
            (
                format!(
                    "[[service]]\nname = \"r\"\ncount = 1\ncommand = [\"x\"]\nport = \"5900+{{index}}\"\ntarget = \"rebind\"\n{hosts}{launcher}"
                ),
                "cannot follow a command started through a launcher",
            ),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(why), "{why:?} not in {err:?}");
        }
    }

    #[test]
    fn the_seed_json_reads() {
        let s = from_json(
            r#"{"Desktop": {"script": "/opt/start-desktop", "count": 4, "options": {"geometry": "1024x768"}}}"#,
        )
        .unwrap();
        let d = &s.services[0];
        assert_eq!(d.command, ["/opt/start-desktop", "start", "{index}"]);
        assert!(d.options_env);
        assert_eq!(d.options["geometry"].default, "1024x768");
        assert!(from_json(r#"{"D": {"script": "x", "count": 1, "colour": 1}}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_text_is_a_services_file_or_one_line_error(text in "(?s).{0,400}") {
            if let Err(e) = parse(&text) {
                prop_assert!(!e.contains('\n'), "{e}");
            }
        }

        #[test]
        fn text_without_braces_is_left_alone(text in "[^{}]{0,100}") {
            prop_assert_eq!(substitute(&text, |_| "X".into()), text.clone());
            prop_assert!(placeholders(&text).unwrap().is_empty());
        }

        #[test]
        fn every_placeholder_is_replaced(names in prop::collection::vec("[a-z_]{1,12}", 0..6), glue in "[a-z ]{0,5}") {
            let text: String = names.iter().map(|n| format!("{glue}{{{n}}}")).collect();
            let out = substitute(&text, |name| name.to_uppercase());
            let want: String = names.iter().map(|n| format!("{glue}{}", n.to_uppercase())).collect();
            prop_assert_eq!(out, want);
            prop_assert_eq!(placeholders(&text).unwrap(), names.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
