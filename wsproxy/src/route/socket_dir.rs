//! `UnixDomainSocketDirectory`: the token names a UNIX socket in a directory.
//!
//! Anything that would leave the directory (`/`, `..`, a symlink pointing outside) or is not a
//! socket is an unknown token (websockify's newer pathlib version lets `../x.sock` out).

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::file_name::is_plain_name;
use super::{Lookup, LookupError, TokenSource};
use crate::config::Target;

pub struct SocketDirectory {
    /// Canonical, so a resolved socket can be checked to lie inside it.
    dir: PathBuf,
}

impl SocketDirectory {
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        let dir =
            std::fs::canonicalize(&dir).map_err(|e| format!("cannot use --token-source {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!(
                "--token-source {} must be a directory for UnixDomainSocketDirectory",
                dir.display()
            ));
        }
        Ok(SocketDirectory { dir })
    }
}

impl TokenSource for SocketDirectory {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            if !is_plain_name(token) {
                return Err(LookupError::unknown());
            }
            let path = match tokio::fs::canonicalize(self.dir.join(token)).await {
                Ok(path) if path.starts_with(&self.dir) => path,
                _ => return Err(LookupError::unknown()),
            };
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.file_type().is_socket() => Ok(Target::Unix(path)),
                _ => Err(LookupError::unknown()),
            }
        })
    }
}
