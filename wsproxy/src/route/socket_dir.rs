//! `UnixDomainSocketDirectory`: the token names a UNIX socket in a directory.
//!
//! Anything that would leave the directory (`/`, `..`, a symlink pointing outside) or is not a
//! socket is an unknown token (websockify's newer pathlib version lets `../x.sock` out).

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use super::file_name::{entry, source_directory};
use super::{Lookup, LookupError, TokenSource};
use crate::config::Target;

pub struct SocketDirectory {
    /// Canonical, so a resolved socket can be checked to lie inside it.
    dir: PathBuf,
}

impl SocketDirectory {
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        Ok(SocketDirectory {
            dir: source_directory(&dir, "UnixDomainSocketDirectory")?,
        })
    }
}

impl TokenSource for SocketDirectory {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let Ok(Some(path)) = entry(&self.dir, token).await else {
                return Err(LookupError::unknown());
            };
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.file_type().is_socket() => Ok(Target::Unix(path)),
                _ => Err(LookupError::unknown()),
            }
        })
    }
}
