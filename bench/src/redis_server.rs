//! A private redis-server for the TokenRedis rows: started on a free 127.0.0.1 port, without
//! persistence (`--save ''`, `--appendonly no`), its working directory and log in the token
//! directory, and killed when the benchmark ends (or drops it on an error or Ctrl-C). Never a
//! system service, never a fixed port.
//!
//! The benchmark itself speaks just enough RESP to wait for PING and to write keys: one MSET
//! with every token, in one write; and FLUSHDB, with which the cluster scenario empties it
//! between measurements.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{sleep, timeout};

use crate::proxy::free_port;

/// How long redis-server may take to answer its first PING.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one command (a PING, the MSET of every token) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long redis-server may take to exit after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How much of its log is quoted when it fails to start.
const LOG_TAIL: usize = 2048;

pub struct RedisServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl RedisServer {
    /// Starts redis-server in `dir` and waits until it answers PING.
    pub async fn start(dir: &Path) -> Result<RedisServer, String> {
        let port = free_port()?;
        let log = dir.join("redis.log");
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|e| {
            format!("cannot run redis-server: {e} (scripts/need-apt redis-server:redis-server installs it)")
        })?;
        let mut server = RedisServer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Where it listens, on 127.0.0.1.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets every `(key, value)` pair in one MSET.
    pub async fn set_all(&self, pairs: &[(String, String)]) -> Result<(), String> {
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for (key, value) in pairs {
            args.extend([key.as_bytes(), value.as_bytes()]);
        }
        match self.command(&args).await?.as_str() {
            "+OK" => Ok(()),
            other => Err(format!("redis-server answered MSET with {other}")),
        }
    }

    /// Its process id, for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Removes every key of its database.
    pub async fn flush(&self) -> Result<(), String> {
        match self.command(&[b"FLUSHDB"]).await?.as_str() {
            "+OK" => Ok(()),
            other => Err(format!("redis-server answered FLUSHDB with {other}")),
        }
    }

    /// Kills it and reaps it, bounded.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = timeout(KILL_WAIT, self.child.wait()).await;
    }

    /// Sends one command and returns the first line of the reply.
    async fn command(&self, args: &[&[u8]]) -> Result<String, String> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await?;
            stream.write_all(&encode(args)).await?;
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line.trim_end().to_string())
        };
        match timeout(COMMAND_TIMEOUT, exchange).await {
            Ok(Ok(line)) if !line.is_empty() => Ok(line),
            Ok(Ok(_)) => Err(format!("redis-server at {} closed without a reply", self.addr)),
            Ok(Err(e)) => Err(format!("redis-server at {}: {e}", self.addr)),
            Err(_) => Err(format!(
                "redis-server at {} did not answer within {} s",
                self.addr,
                COMMAND_TIMEOUT.as_secs()
            )),
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited ({status}) at start{}", self.log_note()));
            }
            if self.command(&[b"PING"]).await.is_ok_and(|reply| reply == "+PONG") {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer PING on {} within {} s{}",
                    self.addr,
                    READY_TIMEOUT.as_secs(),
                    self.log_note()
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// The end of its log, formatted to follow an error message.
    fn log_note(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text[text.len().saturating_sub(LOG_TAIL)..]).into_owned();
        match text.trim() {
            "" => String::new(),
            text => format!("\n--- end of {} ---\n{text}", self.log.display()),
        }
    }
}

/// A command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"tok1", b"h:1"]),
            b"*3\r\n$3\r\nSET\r\n$4\r\ntok1\r\n$3\r\nh:1\r\n"
        );
    }

    /// A real redis-server (`make deps` and `make bench` install it).
    #[tokio::test]
    async fn a_private_server_takes_every_pair_and_is_gone_after_stop() {
        assert!(
            std::process::Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "redis-server is not installed: `make deps` installs it"
        );
        let dir = std::env::temp_dir().join(format!("wsproxy-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let server = RedisServer::start(&dir).await.unwrap();
        let pairs: Vec<(String, String)> = (0..1000).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
        server.set_all(&pairs).await.unwrap();
        assert_eq!(server.command(&[b"DBSIZE"]).await.unwrap(), ":1000");
        assert_eq!(server.command(&[b"STRLEN", b"k999"]).await.unwrap(), ":4");
        assert!(server.pid().is_some());
        server.flush().await.unwrap();
        assert_eq!(server.command(&[b"DBSIZE"]).await.unwrap(), ":0");
        let addr = server.addr();
        server.stop().await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening on {addr}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
