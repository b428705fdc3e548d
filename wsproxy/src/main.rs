//! The `wsproxy` command: parse, validate, bind (or take systemd's sockets), then serve on a
//! single-threaded runtime (measured faster than a multi-threaded one on small machines: the work
//! is the kernel's); with `--workers N`, `server` adds N-1 more, each on its own thread.

use std::process::ExitCode;

use clap::Parser;
use wsproxy::cli::Cli;
use wsproxy::config::{Config, Listen, MetricsAt};
use wsproxy::ops::systemd;
use wsproxy::{listener, logging};

/// mimalloc rather than glibc's malloc: after a load of 1,000 sessions glibc kept up to a fifth of
/// the peak (freed, but inside its heap and never returned: `make soak` measured 20.6 MiB before
/// the load and 25.0 MiB after), mimalloc gives freed pages back (18.9 → peak 20.4 → 19.1 MiB),
/// and holds an idle connection in as little (9.3 KiB against glibc's 9.1). Its v2 line: v3
/// starts at twice the resident size. `no_thp`: no transparent huge pages for its own memory
/// (they added 4 MiB at start); `keep_huge_pages_for_children` undoes what that does to children.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration mistake (sysexits EX_USAGE).
const EX_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    raise_fd_limit();
    keep_huge_pages_for_children();
    let (config, warnings) = logging::capture(|| Config::try_from(cli));
    let config = match config {
        Ok(config) => config,
        Err(msg) => return fail(&msg, EX_CONFIG),
    };
    // systemd's sockets, when it passed some, replace the listen address (see `ops::systemd`).
    let activated = if config.listen == Listen::Inetd {
        Ok(None)
    } else {
        systemd::listen_fds()
    };
    let bound = match activated {
        Ok(Some(passed)) => listener::share(passed, config.workers),
        Ok(None) => listener::bind_workers(&config.listen, config.workers),
        Err(msg) => Err(msg),
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(msg) => return fail(&msg, EX_CONFIG),
    };
    let described: Vec<String> = bound
        .first()
        .into_iter()
        .flatten()
        .map(listener::Bound::describe)
        .collect();
    let described = described.join(" and ");
    let api = match config.api_listen.as_ref().map(listener::bind).transpose() {
        Ok(api) => api,
        Err(msg) => return fail(&format!("--api-listen: {msg}"), EX_CONFIG),
    };
    let metrics = match &config.metrics_at {
        Some(MetricsAt::Listen(listen)) => match listener::bind(listen) {
            Ok(bound) => Some(bound),
            Err(msg) => return fail(&format!("--metrics: {msg}"), EX_CONFIG),
        },
        Some(MetricsAt::SamePort) | None => None,
    };
    let workers = match config.workers {
        1 => String::new(),
        n => format!("; {n} workers"),
    };
    eprintln!(
        "wsproxy: listening on {described}, relaying to {}{workers}",
        config.route
    );
    if let Some(auto) = &config.auto_cert {
        let made = if auto.made { "made" } else { "reused" };
        let port = described.rsplit(':').next().unwrap_or_default().to_owned();
        let host = auto.names.first().map_or("localhost", String::as_str);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        eprintln!(
            "wsproxy: self-signed certificate {made}: {} for {}; SHA-256 {}",
            auto.path.display(),
            auto.names.join(", "),
            auto.fingerprint
        );
        eprintln!(
            "wsproxy: pages and wss:// at https://{host}:{port}/ (accept the certificate once; compare its SHA-256)"
        );
    }
    if let Some(api) = &api {
        eprintln!("wsproxy: sessions API on http://{}/api/v1/", api.describe());
    }
    match (&metrics, &config.metrics_at) {
        (Some(metrics), _) => eprintln!("wsproxy: metrics on http://{}/metrics", metrics.describe()),
        (None, Some(MetricsAt::SamePort)) => eprintln!("wsproxy: metrics at /metrics on the main port"),
        _ => {}
    }
    if config.daemon
        && let Err(e) = nix::unistd::daemon(false, false)
    {
        return fail(&format!("cannot become a daemon: {e}"), 1);
    }
    if let Err(msg) = logging::init(&config.logging) {
        return fail(&msg, EX_CONFIG);
    }
    logging::replay(&warnings);
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 1),
    };
    match runtime.block_on(wsproxy::run(config, bound, api, metrics)) {
        Ok(code) => ExitCode::from(code),
        Err(msg) => fail(&msg, 1),
    }
}

fn fail(msg: &str, code: u8) -> ExitCode {
    eprintln!("wsproxy: {msg}");
    ExitCode::from(code)
}

/// Each session needs two descriptors; the default soft limit (1024) would cap us near 500.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// mimalloc's `no_thp` turns transparent huge pages off for the whole process with prctl, which
/// children inherit across exec: a QEMU that sessions or wrap mode start would lose them for its
/// guest memory. Turned back on here, mimalloc still never asks for them (`madvise` mode, the
/// usual setting, then gives its memory none).
fn keep_huge_pages_for_children() {
    #[cfg(target_os = "linux")]
    if nix::sys::prctl::get_thp_disable().unwrap_or(false) {
        let _ = nix::sys::prctl::set_thp_disable(false);
    }
}
