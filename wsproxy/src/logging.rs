//! Log output: stderr (not when daemonized), plus `--log-file` and `--syslog` as websockify offers.
//! A reload (SIGHUP) opens `--log-file` again, so logrotate's `postrotate kill -HUP` works.
//!
//! Every formatted event is one line; each sink gets the whole line in one write, so lines from
//! concurrent sessions never interleave and a syslog datagram is exactly one message.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::Logging;

/// `--log-file` as opened by `init`: a reload opens the path again (logrotate moved the old file
/// away) and swaps the new file in; lines being written finish in the old one.
static LOG_FILE: OnceLock<(PathBuf, Arc<Mutex<File>>)> = OnceLock::new();

fn open_log(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open --log-file {}: {e}", path.display()))
}

/// A reload's first step: `--log-file` opened again (`None` without one), not yet in use.
pub fn reopen() -> Option<Result<File, String>> {
    LOG_FILE.get().map(|(path, _)| open_log(path))
}

/// A reload's last step: log lines go to `file` from now on.
pub fn use_file(file: File) {
    if let Some((_, current)) = LOG_FILE.get() {
        *current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = file;
    }
}

pub fn init(config: &Logging) -> Result<(), String> {
    let file = match &config.file {
        Some(path) => {
            let file = Arc::new(Mutex::new(open_log(path)?));
            let _ = LOG_FILE.set((path.clone(), file.clone()));
            Some(file)
        }
        None => None,
    };
    let syslog = match &config.syslog {
        Some(server) => Some(Arc::new(Syslog::connect(server, config.legacy_syslog, config.daemon)?)),
        None => None,
    };
    let sinks = Sinks {
        stderr: !config.daemon,
        file,
        syslog,
    };
    let default = if config.verbose {
        "debug,hyper=info,rustls=info,tokio_util=info"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_env("WSPROXY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sinks)
        .with_ansi(false)
        .with_target(false)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// Runs `f` (reading the configuration) with its warnings kept, since logging can only start once
/// the configuration says where logs go; `replay` then logs them where they belong. So a token
/// file's syntax errors, found while checking it at start-up, reach the log like any other line.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let kept = Kept::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(Level::WARN)
        .with_writer(kept.clone())
        .with_ansi(false)
        .with_target(false)
        .with_level(false)
        .without_time()
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let lines = kept.0.lock().map(|lines| lines.clone()).unwrap_or_default();
    (value, lines)
}

/// Logs what `capture` kept, as warnings.
pub fn replay(lines: &[String]) {
    for line in lines {
        tracing::warn!("{line}");
    }
}

#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Vec<String>>>);

impl Write for Kept {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if let Ok(mut lines) = self.0.lock() {
            lines.extend(text.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Kept {
    type Writer = Kept;

    fn make_writer(&'a self) -> Kept {
        self.clone()
    }
}

#[derive(Clone)]
struct Sinks {
    stderr: bool,
    file: Option<Arc<Mutex<File>>>,
    syslog: Option<Arc<Syslog>>,
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            sinks: self.clone(),
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            sinks: self.clone(),
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// One event's text, delivered to every sink when the formatter is done with it.
struct Line {
    sinks: Sinks,
    level: Level,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // Losing a log line must never take a session down, so write errors are ignored.
        if self.sinks.stderr {
            let _ = io::stderr().lock().write_all(&self.buf);
        }
        if let Some(file) = &self.sinks.file
            && let Ok(mut file) = file.lock()
        {
            let _ = file.write_all(&self.buf);
        }
        if let Some(syslog) = &self.sinks.syslog {
            syslog.send(self.level, &self.buf);
        }
    }
}

enum Transport {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

struct Syslog {
    transport: Transport,
    legacy: bool,
    facility: u8,
    hostname: String,
    pid: u32,
}

impl Syslog {
    /// `HOST:PORT` is a UDP server; anything with a `/` is a local socket such as /dev/log.
    fn connect(server: &str, legacy: bool, daemon: bool) -> Result<Syslog, String> {
        let failed = |e: io::Error| format!("cannot reach --syslog {server}: {e}");
        let transport = if server.contains('/') {
            let socket = UnixDatagram::unbound().map_err(failed)?;
            socket.connect(server).map_err(failed)?;
            Transport::Unix(socket)
        } else {
            let socket =
                UdpSocket::bind(if server.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" }).map_err(failed)?;
            socket.connect(server).map_err(failed)?;
            Transport::Udp(socket)
        };
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "-".into());
        // LOG_DAEMON when daemonized, LOG_USER otherwise, as websockify.
        let facility = if daemon { 3 } else { 1 };
        Ok(Syslog {
            transport,
            legacy,
            facility,
            hostname,
            pid: std::process::id(),
        })
    }

    fn send(&self, level: Level, line: &[u8]) {
        let severity = match level {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            _ => 7,
        };
        let pri = self.facility * 8 + severity;
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        let message = if self.legacy {
            format!("<{pri}>wsproxy[{}]: {text}", self.pid)
        } else {
            // RFC 5424 with a NILVALUE timestamp: the receiving daemon stamps it.
            format!("<{pri}>1 - {} wsproxy {} - - {text}", self.hostname, self.pid)
        };
        let _ = match &self.transport {
            Transport::Udp(socket) => socket.send(message.as_bytes()),
            Transport::Unix(socket) => socket.send(message.as_bytes()),
        };
    }
}
