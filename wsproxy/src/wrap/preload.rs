//! Wrap mode's pure parts: where `librebind.so` is, and the environment the wrapped command gets.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// The library's file name, as `make` and `make install` put it.
pub const LIB_NAME: &str = "librebind.so";

/// Where to look for the library, best first, for a wsproxy executable at `exe`: the installed layout
/// (`PREFIX/bin/wsproxy` next to `PREFIX/lib/wsproxy/librebind.so`), the executable's own directory,
/// then the cargo target directories (`target/debug/wsproxy` next to `target/release/librebind.so`, ...).
/// `$WSPROXY_REBIND_LIB` (`override_path`), when set and not empty, is the only candidate.
pub fn candidates(exe: &Path, override_path: Option<&OsStr>) -> Vec<PathBuf> {
    if let Some(path) = override_path.filter(|p| !p.is_empty()) {
        return vec![PathBuf::from(path)];
    }
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    let mut out = vec![
        dir.join("../lib/wsproxy").join(LIB_NAME),
        dir.join(LIB_NAME),
        dir.join("deps").join(LIB_NAME),
    ];
    for profile in ["release", "debug"] {
        out.push(dir.join("..").join(profile).join(LIB_NAME));
    }
    out.push(dir.join("../debug/deps").join(LIB_NAME));
    out
}

/// The first candidate that `exists`, or an error naming every place looked at.
pub fn locate(exe: &Path, override_path: Option<&OsStr>, exists: impl Fn(&Path) -> bool) -> Result<PathBuf, String> {
    let candidates = candidates(exe, override_path);
    if let Some(found) = candidates.iter().find(|p| exists(p)) {
        return Ok(found.clone());
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "wrap mode needs {LIB_NAME} (build it with `make`, or set WSPROXY_REBIND_LIB); looked at: {}",
        looked.join(", ")
    ))
}

/// The variables set on the wrapped command (and nothing else is changed): the library goes first in
/// `LD_PRELOAD`, before what was already there, so its `bind` wins.
/// The descriptors the command inherits: the report pipe's write end and the shared-port memfd.
#[derive(Clone, Copy)]
pub struct Fds {
    pub report: i32,
    pub state: i32,
}

pub fn child_env(lib: &Path, existing_preload: Option<&OsStr>, old_port: u16, fds: Fds) -> Vec<(String, OsString)> {
    let mut preload = OsString::from(lib);
    if let Some(existing) = existing_preload.filter(|e| !e.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    vec![
        ("LD_PRELOAD".into(), preload),
        ("REBIND_OLD_PORT".into(), old_port.to_string().into()),
        ("REBIND_NEW_PORT".into(), "0".into()),
        ("REBIND_REPORT_FD".into(), fds.report.to_string().into()),
        ("REBIND_STATE_FD".into(), fds.state.to_string().into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_layout_comes_first() {
        let c = candidates(Path::new("/usr/local/bin/wsproxy"), None);
        assert_eq!(c[0], Path::new("/usr/local/bin/../lib/wsproxy/librebind.so"));
        assert_eq!(c[1], Path::new("/usr/local/bin/librebind.so"));
    }

    #[test]
    fn cargo_target_dirs_are_searched() {
        let c = candidates(Path::new("/src/target/debug/wsproxy"), None);
        for want in [
            "/src/target/debug/librebind.so",
            "/src/target/debug/../release/librebind.so",
            "/src/target/debug/../debug/librebind.so",
            "/src/target/debug/../debug/deps/librebind.so",
            "/src/target/debug/deps/librebind.so",
        ] {
            assert!(c.contains(&PathBuf::from(want)), "{want} missing from {c:?}");
        }
    }

    #[test]
    fn override_is_the_only_candidate() {
        let c = candidates(Path::new("/usr/bin/wsproxy"), Some(OsStr::new("/opt/x.so")));
        assert_eq!(c, vec![PathBuf::from("/opt/x.so")]);
        // An empty override counts as unset.
        assert!(candidates(Path::new("/usr/bin/wsproxy"), Some(OsStr::new(""))).len() > 1);
    }

    #[test]
    fn locate_picks_the_first_existing_or_names_all() {
        let exe = Path::new("/src/target/debug/wsproxy");
        let found = locate(exe, None, |p| p.ends_with("release/librebind.so")).unwrap();
        assert_eq!(found, Path::new("/src/target/debug/../release/librebind.so"));
        let err = locate(exe, None, |_| false).unwrap_err();
        assert!(err.contains("WSPROXY_REBIND_LIB"), "{err}");
        assert!(err.contains("/src/target/debug/deps/librebind.so"), "{err}");
        let err = locate(exe, Some(OsStr::new("/nope.so")), |_| false).unwrap_err();
        assert!(err.contains("/nope.so"), "{err}");
    }

    #[test]
    fn env_puts_the_library_first() {
        let lib = Path::new("/lib/librebind.so");
        let fds = Fds { report: 7, state: 8 };
        let env = child_env(lib, Some(OsStr::new("/a.so:/b.so")), 5901, fds);
        assert_eq!(
            env,
            vec![
                (
                    "LD_PRELOAD".to_string(),
                    OsString::from("/lib/librebind.so:/a.so:/b.so")
                ),
                ("REBIND_OLD_PORT".to_string(), OsString::from("5901")),
                ("REBIND_NEW_PORT".to_string(), OsString::from("0")),
                ("REBIND_REPORT_FD".to_string(), OsString::from("7")),
                ("REBIND_STATE_FD".to_string(), OsString::from("8")),
            ]
        );
        let env = child_env(lib, None, 1, fds);
        assert_eq!(env[0].1, OsString::from("/lib/librebind.so"));
        let env = child_env(lib, Some(OsStr::new("")), 1, fds);
        assert_eq!(env[0].1, OsString::from("/lib/librebind.so"));
    }
}
