//! `TokenFileName`: the token is the name of a file in a directory; the file holds `host:port`.
//!
//! The token is a name, never a path: an empty name, `.`, `..`, or one with `/` or NUL is an unknown
//! token, and the file must be a regular file inside the directory once symlinks are resolved, so
//! no token reads anything outside it.

use std::path::PathBuf;

use super::{Lookup, LookupError, TokenSource, parse_token_target};

pub struct TokenFileName {
    /// Canonical, so a resolved file can be checked to lie inside it.
    dir: PathBuf,
}

impl TokenFileName {
    pub fn new(dir: PathBuf) -> Result<Self, String> {
        let dir =
            std::fs::canonicalize(&dir).map_err(|e| format!("cannot use --token-source {}: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!(
                "--token-source {} must be a directory for TokenFileName",
                dir.display()
            ));
        }
        Ok(TokenFileName { dir })
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
