//! `TokenFileName`: the token is the name of a file in a directory; the file holds `host:port`.
//!
//! The token is a name, never a path: an empty name, `.`, `..`, or one with `/` or NUL is an unknown
//! token, and the file must be a regular file inside the directory once symlinks are resolved, so
//! no token reads anything outside it.

use std::path::{Path, PathBuf};

use super::{Lookup, LookupError, TokenSource, parse_token_target};

pub struct TokenFileName {
    /// Canonical, so a resolved file can be checked to lie inside it.
    dir: PathBuf,
}

impl TokenFileName {
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        Ok(TokenFileName {
            dir: source_directory(&dir, "TokenFileName")?,
        })
    }
}

/// `--token-source DIR` canonicalised, for the plugins whose tokens name entries of a directory.
pub fn source_directory(dir: &Path, plugin: &str) -> Result<PathBuf, String> {
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("cannot use --token-source {}: {e}", dir.display()))?;
    if !dir.is_dir() {
        return Err(format!(
            "--token-source {} must be a directory for {plugin}",
            dir.display()
        ));
    }
    Ok(dir)
}

/// The entry `token` names in `dir` (canonical), if the token is a plain name and the entry, once
/// symlinks are resolved, still lies inside `dir`. `Err` for an I/O error other than "not found".
pub async fn entry(dir: &Path, token: &str) -> Result<Option<PathBuf>, std::io::Error> {
    if !is_plain_name(token) {
        return Ok(None);
    }
    match tokio::fs::canonicalize(dir.join(token)).await {
        Ok(path) if path.starts_with(dir) => Ok(Some(path)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A token usable as one file name in a directory.
pub fn is_plain_name(token: &str) -> bool {
    !token.is_empty() && token != "." && token != ".." && !token.contains(['/', '\0'])
}

impl TokenSource for TokenFileName {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            if !is_plain_name(token) {
                return Err(LookupError::unknown());
            }
            let path = match tokio::fs::canonicalize(self.dir.join(token)).await {
                Ok(path) if path.starts_with(&self.dir) => path,
                Ok(_) => return Err(LookupError::unknown()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LookupError::unknown()),
                Err(e) => {
                    return Err(LookupError::Unavailable(format!(
                        "cannot read the token directory: {e}"
                    )));
                }
            };
            if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                return Err(LookupError::unknown());
            }
            let text = tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| LookupError::Unavailable(format!("cannot read {}: {e}", path.display())))?;
            parse_token_target(&text).map_err(|why| {
                tracing::warn!("bad target in {}: {why}", path.display());
                LookupError::Unknown("The token's target is malformed".into())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_not_paths() {
        assert!(is_plain_name("desk1"));
        assert!(is_plain_name("a.b"));
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\0"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
