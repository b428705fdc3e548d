//! The tokens of the connects-with-tokens rows, and the sources that hold them.
//!
//! A `--token-proxy` template routes by token instead of naming the target: `{token-file}` becomes
//! a file of `tokNNNNN: 127.0.0.1:PORT` lines (websockify's TokenFile format), `{redis}` becomes
//! 127.0.0.1:PORT of a private redis-server holding `tokNNNNN` = `127.0.0.1:PORT` (TokenRedis).
//! Every token names the in-process echo backend; the client asks for `/websockify?token=tokNNNNN`
//! with a different token each time, so lookups hit the whole set. The backend is bound afresh
//! for each measurement, so each start of a proxy first points every token at the new backend.
//!
//! The file and redis-server's directory live in a fresh directory under target/ (next to the
//! benchmark's binary), removed at the end.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::redis_server::RedisServer;
use crate::report::{self, Kind};

/// The path of every request with a token, as noVNC asks (`path=websockify?token=...`).
pub const PATH: &str = "/websockify";

/// Where a proxy looks its tokens up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `{token-file}`: a file, websockify's TokenFile plugin.
    File,
    /// `{redis}`: a redis-server, websockify's TokenRedis plugin.
    Redis,
}

impl TokenSource {
    pub const ALL: [TokenSource; 2] = [TokenSource::File, TokenSource::Redis];

    /// What a `--token-proxy` template writes for it.
    pub fn placeholder(self) -> &'static str {
        match self {
            Self::File => "{token-file}",
            Self::Redis => "{redis}",
        }
    }

    /// The token plugin that reads it, in websockify's and wsproxy's `--token-plugin`.
    pub fn plugin(self) -> &'static str {
        match self {
            Self::File => "TokenFile",
            Self::Redis => "TokenRedis",
        }
    }

    /// Its connects row.
    pub fn connects_kind(self) -> Kind {
        match self {
            Self::File => report::CONNECTS_TOKEN_FILE,
            Self::Redis => report::CONNECTS_TOKEN_REDIS,
        }
    }

    /// Its row of the proxy's CPU time per connect.
    pub fn cpu_kind(self) -> Kind {
        match self {
            Self::File => report::CPU_CONNECT_TOKEN_FILE_PROXY,
            Self::Redis => report::CPU_CONNECT_TOKEN_REDIS_PROXY,
        }
    }
}

/// `count` tokens, `tok00000` and on.
#[derive(Clone, Copy, Debug)]
pub struct TokenSet {
    pub count: usize,
}

impl TokenSet {
    pub fn name(self, index: usize) -> String {
        format!("tok{index:05}")
    }

    /// The request path for token number `pick` (taken modulo the count).
    pub fn request_path(self, pick: u64) -> String {
        let index = (pick % self.count.max(1) as u64) as usize;
        format!("{PATH}?token={}", self.name(index))
    }

    /// Every token, each naming `target`.
    fn pairs(self, target: SocketAddr) -> Vec<(String, String)> {
        (0..self.count).map(|i| (self.name(i), target.to_string())).collect()
    }

    /// The token file: `token: host:port` lines.
    fn file_text(self, target: SocketAddr) -> String {
        let mut text = String::with_capacity(self.count * 28);
        for (token, target) in self.pairs(target) {
            let _ = writeln!(text, "{token}: {target}");
        }
        text
    }
}

/// The token sources of one benchmark run.
pub struct Tokens {
    set: TokenSet,
    dir: PathBuf,
    file: PathBuf,
    redis: Option<RedisServer>,
}

impl Tokens {
    /// Makes the directory and, if `sources` has Redis, starts redis-server.
    pub async fn start(set: TokenSet, sources: &[TokenSource]) -> Result<Tokens, String> {
        let dir = scratch_dir().join(format!("bench-tokens.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut tokens = Tokens {
            set,
            file: dir.join("tokens.conf"),
            dir,
            redis: None,
        };
        if sources.contains(&TokenSource::Redis) {
            tokens.redis = Some(RedisServer::start(&tokens.dir).await?);
        }
        Ok(tokens)
    }

    /// Points every token in `source` at `target`; returns what replaces its placeholder.
    pub async fn point_at(&self, source: TokenSource, target: SocketAddr) -> Result<String, String> {
        match source {
            TokenSource::File => {
                // Written aside and renamed, so a reader never sees half a file.
                let part = self.file.with_extension("part");
                std::fs::write(&part, self.set.file_text(target))
                    .and_then(|()| std::fs::rename(&part, &self.file))
                    .map_err(|e| format!("cannot write {}: {e}", self.file.display()))?;
                Ok(self.file.display().to_string())
            }
            TokenSource::Redis => {
                let redis = self.redis.as_ref().ok_or("redis-server was not started")?;
                redis.set_all(&self.set.pairs(target)).await?;
                Ok(redis.addr().to_string())
            }
        }
    }

    /// Stops redis-server and removes the directory.
    pub async fn stop(mut self) {
        if let Some(redis) = self.redis.take() {
            redis.stop().await;
        }
    }
}

impl Drop for Tokens {
    fn drop(&mut self) {
        // redis-server, if still running, is killed as its field is dropped.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// target/ of the build that made this binary (target/release/wsproxy-bench → target/), or the
/// system's temporary directory for a binary elsewhere.
pub fn scratch_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .unwrap_or_else(std::env::temp_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_has_one_line_per_token_and_paths_cycle_through_them() {
        let set = TokenSet { count: 3 };
        let target = "127.0.0.1:9".parse().unwrap();
        assert_eq!(
            set.file_text(target),
            "tok00000: 127.0.0.1:9\ntok00001: 127.0.0.1:9\ntok00002: 127.0.0.1:9\n"
        );
        assert_eq!(set.request_path(4), "/websockify?token=tok00001");
    }
}
