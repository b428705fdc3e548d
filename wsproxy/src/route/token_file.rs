//! `ReadOnlyTokenFile` and `TokenFile`: lines `token: host:port` in a file or a directory of files.
//!
//! The format is websockify's: blank lines and `#` comments are skipped; a line is split where a
//! `:` is followed by white space and must split in exactly two; the target is `host:port`,
//! `[v6]:port`, `v6:port` or `unix_socket:/path`. A malformed line is logged with its file and line
//! number and skipped. `ReadOnlyTokenFile` is read once at start, `TokenFile` again whenever the
//! files change (checked at most once a second, see `reloading`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Lookup, LookupError, TokenSource, parse_token_target};
use crate::config::Target;
use crate::reloading::{Reloading, files};

pub struct TokenFile {
    tokens: Reloading<HashMap<String, Target>>,
}

impl TokenFile {
    pub fn read_only(path: PathBuf) -> Result<Self, String> {
        Ok(TokenFile {
            tokens: Reloading::new(path, load, false)?,
        })
    }

    pub fn reloading(path: PathBuf) -> Result<Self, String> {
        Ok(TokenFile {
            tokens: Reloading::new(path, load, true)?,
        })
    }
}

impl TokenSource for TokenFile {
    fn lookup<'a>(&'a self, token: &'a str) -> Lookup<'a> {
        let found = self.tokens.get().get(token).cloned().ok_or_else(LookupError::unknown);
        Box::pin(std::future::ready(found))
    }
}

fn load(source: &Path) -> Result<HashMap<String, Target>, String> {
    let mut tokens = HashMap::new();
    for file in files(source)? {
        let text = match std::fs::read(&file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => {
                tracing::warn!("cannot read token file {}: {e}; skipped", file.display());
                continue;
            }
        };
        for (index, line) in text.lines().enumerate() {
            match parse_line(line) {
                None => {}
                Some(Ok((token, target))) => {
                    tokens.insert(token, target);
                }
                Some(Err(why)) => tracing::warn!(
                    "syntax error in {} on line {}: {why}; line skipped",
                    file.display(),
                    index + 1
                ),
            }
        }
    }
    Ok(tokens)
}

/// One line: `None` for a blank line or a comment, else the token and its target or what is wrong.
pub fn parse_line(line: &str) -> Option<Result<(String, Target), String>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    // websockify: re.split(r':\s', line) must give exactly two parts.
    let splits: Vec<usize> = line
        .char_indices()
        .zip(line.chars().skip(1))
        .filter(|((_, c), next)| *c == ':' && next.is_whitespace())
        .map(|((i, _), _)| i)
        .collect();
    let [at] = splits[..] else {
        return Some(Err("expected `token: host:port` (one colon followed by a space)".into()));
    };
    let token = &line[..at];
    let target = line[at + 1..].trim_start();
    Some(parse_token_target(target).map(|target| (token.to_owned(), target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Target {
        Target::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn lines_as_websockify_reads_them() {
        assert_eq!(parse_line("# comment"), None);
        assert_eq!(parse_line("   "), None);
        assert_eq!(
            parse_line("desk1: vnc1.example:5901"),
            Some(Ok(("desk1".into(), tcp("vnc1.example", 5901))))
        );
        assert_eq!(
            parse_line("t:\t127.0.0.1:5900"),
            Some(Ok(("t".into(), tcp("127.0.0.1", 5900))))
        );
        assert_eq!(parse_line("v6: [::1]:5900"), Some(Ok(("v6".into(), tcp("::1", 5900)))));
        assert_eq!(parse_line("v6b: ::1:5900"), Some(Ok(("v6b".into(), tcp("::1", 5900)))));
        assert_eq!(
            parse_line("s: unix_socket:/run/qemu/serial.sock"),
            Some(Ok(("s".into(), Target::Unix("/run/qemu/serial.sock".into()))))
        );
        for bad in ["nocolon", "a:b:c", "two: h:1: x", "t: host", "t: host:99999"] {
            assert!(matches!(parse_line(bad), Some(Err(_))), "{bad}");
        }
    }

    #[test]
    fn a_bad_line_spoils_only_itself() {
        let dir = std::env::temp_dir().join(format!("wsproxy-tokenfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.conf"), "good: h1:1\nbroken line\n\n# c\nalso: [::1]:2\n").unwrap();
        std::fs::write(dir.join("b.conf"), "other: unix_socket:/tmp/x.sock\n").unwrap();
        let tokens = load(&dir).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_eq!(tokens["good"], tcp("h1", 1));
        assert_eq!(tokens["also"], tcp("::1", 2));
        assert_eq!(tokens["other"], Target::Unix("/tmp/x.sock".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_line_parses_or_says_why(line in ".{0,200}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn written_lines_read_back(
            token in "[A-Za-z0-9_.-]{1,40}",
            host in "[a-z][a-z0-9.-]{0,30}",
            port in 1u16..,
            v6 in any::<[u16; 8]>(),
            use_v6 in any::<bool>(),
        ) {
            let (text, want) = if use_v6 {
                let ip = std::net::Ipv6Addr::from(v6);
                (format!("{token}: [{ip}]:{port}"), Target::Tcp { host: ip.to_string(), port })
            } else {
                (format!("{token}: {host}:{port}"), Target::Tcp { host: host.clone(), port })
            };
            prop_assert_eq!(parse_line(&text), Some(Ok((token.clone(), want))));
        }
    }
}
