//! End-to-end tests of `librebind.so`: real processes (a C fixture,
//! `python3 -m http.server`, `scripts/rebind`) run with the built library in
//! `LD_PRELOAD`.
//!
//! Never `use rebind` here: linking the rlib would put its `bind` into this
//! test binary and hook the test's own binds (STYLE.md 7(b));
//! `test_binary_does_not_define_bind` checks that.
//!
//! Every wait is bounded by `TIMEOUT`, children run in their own process
//! group and are killed with it on drop, ports come from binding port 0, and
//! everything listens on loopback only (a preloaded fixture asked for
//! `0.0.0.0` is moved to loopback before it binds).

use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// The bound on every wait in this file.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Removed from every child's environment, so the caller's environment
/// cannot change a test.
const REBIND_VARS: &[&str] = &[
    "LD_PRELOAD",
    "REBIND_OLD_PORT",
    "REBIND_NEW_PORT",
    "REBIND_PORT_OLD",
    "REBIND_PORT_NEW",
    "REBIND_REPORT_FD",
    "REBIND_STATE_FD",
    "REBIND_LIB",
];

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/// The `librebind.so` cargo built for this test run: the test binary lives
/// in `target/<profile>/deps/`, and with `crate-type = ["cdylib", "rlib"]`
/// `cargo test` builds `deps/librebind.so` (it reaches `target/<profile>/`
/// only with `cargo build`, so that copy may be stale and comes second).
fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("the test binary has a directory");
        let mut candidates = vec![deps.join("librebind.so")];
        if let Some(profile) = deps.parent() {
            candidates.push(profile.join("librebind.so"));
        }
        candidates
            .iter()
            .find(|path| path.is_file())
            .unwrap_or_else(|| panic!("librebind.so not found in {candidates:?}"))
            .canonicalize()
            .expect("canonicalize librebind.so")
    })
}

/// A directory under cargo's per-target temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("rebind-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        Self(path.canonicalize().expect("canonicalize temp dir"))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The C fixture, compiled once per test run with `cc`.
fn server_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixture/server.c");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
        fs::create_dir_all(dir).expect("create CARGO_TARGET_TMPDIR");
        // Compile to a private name, then rename: another test run may be
        // executing the previous binary right now.
        let tmp = dir.join(format!("rebind-server.{}.tmp", std::process::id()));
        let out = Command::new("cc")
            .args(["-Wall", "-Wextra", "-O1", "-o"])
            .arg(&tmp)
            .arg(&source)
            .output()
            .expect("run cc (a C compiler is needed to build the fixture)");
        assert!(
            out.status.success(),
            "cc {} failed: {}\n{}",
            source.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = dir.join("rebind-server");
        fs::rename(&tmp, &bin).expect("rename the fixture");
        bin
    })
}

/// Lines read from a pipe by a background thread.
struct Lines(Receiver<String>);

impl Lines {
    fn spawn(reader: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self(rx)
    }

    /// The next line; `None` at end of file; `Err` on timeout.
    fn next(&self, deadline: Instant) -> Result<Option<String>, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.0.recv_timeout(left) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => Err(format!("no line within {TIMEOUT:?}")),
        }
    }

    /// Every line up to end of file.
    fn rest(&self, deadline: Instant) -> Result<Vec<String>, String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next(deadline)? {
            lines.push(line);
        }
        Ok(lines)
    }
}

/// A finished child.
struct Finished {
    what: String,
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\ncommand: {}\nstatus: {}\nstdout: {:#?}\nstderr:\n{}",
            self.what, self.status, self.stdout, self.stderr
        )
    }
}

impl Finished {
    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }
}

/// A running child in its own process group; the group is killed on drop.
struct Proc {
    child: Child,
    what: String,
    stdout: Lines,
    stderr: Receiver<String>,
    reaped: bool,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Self {
        let what = format!("{cmd:?}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));
        let stdout = Lines::spawn(child.stdout.take().expect("piped stdout"));
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            let _ = tx.send(text);
        });
        Self {
            child,
            what,
            stdout,
            stderr,
            reaped: false,
        }
    }

    /// The next stdout line (panics on end of file or timeout).
    fn line(&mut self) -> String {
        match self.stdout.next(Instant::now() + TIMEOUT) {
            Ok(Some(line)) => line,
            Ok(None) => {
                let out = self.finish();
                panic!("stdout closed early{out}")
            }
            Err(e) => panic!("{}: {e}", self.what),
        }
    }

    /// Waits for the child to exit and collects the rest of its output.
    fn finish(&mut self) -> Finished {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Ok(None) => panic!("{} still running after {TIMEOUT:?}", self.what),
                Err(e) => panic!("wait for {}: {e}", self.what),
            }
        };
        self.reaped = true;
        let stdout = self
            .stdout
            .rest(deadline)
            .unwrap_or_else(|e| panic!("stdout of {}: {e}", self.what));
        let left = deadline.saturating_duration_since(Instant::now());
        let stderr = self
            .stderr
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("stderr of {}: {e}", self.what));
        Finished {
            what: self.what.clone(),
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions; the group
            // is the child's own (process_group(0)) and still exists because
            // the child has not been reaped.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: Command) -> Finished {
    Proc::spawn(cmd).finish()
}

/// `program ARGS` with none of the library's variables in its environment.
fn clean(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    for var in REBIND_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// The fixture with a clean environment and no preload.
fn fixture(args: &[&str]) -> Command {
    clean(server_bin(), args)
}

/// `cmd` with the library preloaded and `vars` set.
fn with_library(mut cmd: Command, vars: &[(&str, &str)]) -> Command {
    cmd.env("LD_PRELOAD", lib());
    cmd.envs(vars.iter().copied());
    cmd
}

/// The fixture with the library preloaded and `vars` set.
fn preloaded(args: &[&str], vars: &[(&str, &str)]) -> Command {
    with_library(fixture(args), vars)
}

/// The fixture with the library moving port `old` to `new` (the library's variable names).
fn moving(args: &[&str], old: &str, new: &str) -> Command {
    preloaded(args, &[("REBIND_OLD_PORT", old), ("REBIND_NEW_PORT", new)])
}

/// Runs the fixture in `mode` as a listening server on the old port (free on `ip`), moved to a new
/// port: it must report `bound HOST:NEW` and answer on `connect_ip:NEW`.
fn assert_moved_and_serving(mode: &str, ip: &str, host: &str, connect_ip: std::net::IpAddr) {
    let old = free_port(ip).to_string();
    let new = free_port(ip);
    let mut server = Proc::spawn(moving(&[mode, &old, "listen"], &old, &new.to_string()));
    assert_eq!(server.line(), format!("bound {host}:{new}"));
    assert_eq!(server.line(), "listening");
    assert_eq!(fetch(SocketAddr::new(connect_ip, new), b""), "x");
    let out = server.finish();
    assert!(out.status.success(), "{out}");
}

/// A port that was free a moment ago on `ip` (the kernel's choice for port
/// 0, so it is not in use by anything else right now).
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("bind {ip}:0: {e}"))
        .port()
}

/// Whether IPv6 loopback is usable here; prints why a test is skipped.
fn have_ipv6(test: &str) -> bool {
    let ok = TcpListener::bind("[::1]:0").is_ok();
    if !ok {
        eprintln!("skipping {test}: cannot bind [::1]:0 (no IPv6 loopback)");
    }
    ok
}

/// A pipe, both ends close-on-exec: `(read, write)`.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Lets the child inherit `fd` (under the same number) and names it in
/// `REBIND_REPORT_FD`. The descriptor stays close-on-exec in this process,
/// so concurrently spawned children do not get it.
fn pass_report_fd(cmd: &mut Command, fd: &impl AsRawFd) {
    pass_fd(cmd, "REBIND_REPORT_FD", fd);
}

/// Lets the child inherit `fd` and names it in the variable `var`.
fn pass_fd(cmd: &mut Command, var: &str, fd: &impl AsRawFd) {
    let fd = fd.as_raw_fd();
    cmd.env(var, fd.to_string());
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe,
    // on a descriptor the forked child inherited.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Every report line written to the pipe, once all writers are gone.
fn report_lines(read: OwnedFd) -> Vec<String> {
    Lines::spawn(fs::File::from(read))
        .rest(Instant::now() + TIMEOUT)
        .expect("report pipe")
}

/// Connects to `addr` (retrying while refused, until `TIMEOUT`) and reads
/// until the peer closes.
fn fetch(addr: SocketAddr, request: &[u8]) -> String {
    let deadline = Instant::now() + TIMEOUT;
    let mut stream = loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                eprintln!("connect {addr}: {e}; retrying");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    };
    stream.set_read_timeout(Some(TIMEOUT)).expect("read timeout");
    stream.set_write_timeout(Some(TIMEOUT)).expect("write timeout");
    stream.write_all(request).expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

fn errno_line(errno: i32) -> String {
    format!("error bind errno={errno}")
}

/// Parses the port out of a `bound HOST:PORT` or report line.
fn port_of(line: &str) -> u16 {
    line.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

// ---------------------------------------------------------------------------
// Moves
// ---------------------------------------------------------------------------

#[test]
fn v4_wildcard_moves_to_loopback_new_port() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let out = run(moving(&["v4", &old], &old, &new));
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn v4_specific_address_moves_too() {
    let old = free_port("127.0.0.2").to_string();
    let new = free_port("127.0.0.1").to_string();
    let out = run(moving(&["v4", &old, "addr=127.0.0.2"], &old, &new));
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");
}

#[test]
fn v6_wildcard_moves_to_ipv6_loopback() {
    if !have_ipv6("v6_wildcard_moves_to_ipv6_loopback") {
        return;
    }
    let old = free_port("::1").to_string();
    let new = free_port("::1").to_string();
    let out = run(moving(&["v6", &old], &old, &new));
    assert_eq!(out.stdout, [format!("bound [::1]:{new}")], "{out}");
    assert!(out.status.success(), "{out}");
}

/// Decision: `::` on a dual-stack socket goes to `::1`, giving up IPv4
/// loopback; wsproxy connects to the reported `[::1]:PORT`.
#[test]
fn dual_stack_wildcard_moves_to_ipv6_loopback_and_accepts() {
    if !have_ipv6("dual_stack_wildcard_moves_to_ipv6_loopback_and_accepts") {
        return;
    }
    assert_moved_and_serving("dual", "::1", "[::1]", std::net::Ipv6Addr::LOCALHOST.into());
}

/// Decision: a v4-mapped address goes to `::ffff:127.0.0.1`, so the socket
/// stays reachable as `127.0.0.1:NEW`.
#[test]
fn v4_mapped_moves_to_mapped_loopback_reachable_over_ipv4() {
    if !have_ipv6("v4_mapped_moves_to_mapped_loopback_reachable_over_ipv4") {
        return;
    }
    assert_moved_and_serving(
        "mapped",
        "127.0.0.1",
        "[::ffff:127.0.0.1]",
        std::net::Ipv4Addr::LOCALHOST.into(),
    );
}

/// On a V6ONLY socket the kernel refuses any mapped address; the moved
/// bind must fail the same way, with the same errno.
#[test]
fn v4_mapped_on_v6only_socket_keeps_the_kernel_error() {
    if !have_ipv6("v4_mapped_on_v6only_socket_keeps_the_kernel_error") {
        return;
    }
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let plain = run(fixture(&["mapped6only", &old]));
    let moved = run(moving(&["mapped6only", &old], &old, &new));
    assert_eq!(plain.stdout, [errno_line(libc::EINVAL)], "{plain}");
    assert_eq!(moved.stdout, plain.stdout, "{moved}");
}

#[test]
fn moved_address_accepts_connections() {
    assert_moved_and_serving("v4", "127.0.0.1", "127.0.0.1", std::net::Ipv4Addr::LOCALHOST.into());
}

#[test]
fn websockify_script_names_work() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let out = run(preloaded(
        &["v4", &old],
        &[("REBIND_PORT_OLD", &old), ("REBIND_PORT_NEW", &new)],
    ));
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn library_names_win_over_script_names() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let other = free_port("127.0.0.1").to_string();
    let out = run(preloaded(
        &["v4", &old],
        &[
            ("REBIND_OLD_PORT", &old),
            ("REBIND_NEW_PORT", &new),
            ("REBIND_PORT_OLD", &old),
            ("REBIND_PORT_NEW", &other),
        ],
    ));
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");
}

// ---------------------------------------------------------------------------
// Report line and the kernel-chosen port
// ---------------------------------------------------------------------------

#[test]
fn report_line_matches_the_kernel_chosen_port() {
    let old = free_port("127.0.0.1");
    let old_text = old.to_string();
    let (read, write) = pipe();
    let mut cmd = moving(&["v4", &old_text], &old_text, "0");
    pass_report_fd(&mut cmd, &write);
    let out = run(cmd);
    drop(write);
    let report = report_lines(read);
    assert_eq!(out.stdout.len(), 1, "{out}");
    let port = port_of(&out.stdout[0]);
    assert_ne!(port, old, "{out}");
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{port}")], "{out}");
    assert_eq!(report, [format!("127.0.0.1:{port}")], "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

/// `vncserver` probes the port in one program and Xvnc binds it in another (a fresh image after
/// `exec`): with `REBIND_STATE_FD` both get the port the first one was given.
#[test]
fn state_fd_shares_the_chosen_port_across_exec() {
    let old = free_port("127.0.0.1").to_string();
    // SAFETY: a NUL-terminated name and valid flags.
    let raw = unsafe { libc::memfd_create(c"rebind-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(raw >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor that nothing else owns.
    let state = unsafe { OwnedFd::from_raw_fd(raw) };
    let server = server_bin().to_str().expect("fixture path");
    let script = format!("{server} v4 {old} && {server} v4 {old}");
    let mut cmd = with_library(
        clean("sh", &["-c", &script]),
        &[("REBIND_OLD_PORT", &old), ("REBIND_NEW_PORT", "0")],
    );
    pass_fd(&mut cmd, "REBIND_STATE_FD", &state);
    let out = run(cmd);
    assert!(out.status.success(), "{out}");
    assert_eq!(out.stdout.len(), 2, "{out}");
    assert_eq!(
        out.stdout[0], out.stdout[1],
        "the second program got another port: {out}"
    );
    assert_ne!(port_of(&out.stdout[0]).to_string(), old, "{out}");
    let mut stored = [0u8; 2];
    // SAFETY: `stored` is a writable buffer of 2 bytes.
    let read = unsafe { libc::pread(state.as_raw_fd(), stored.as_mut_ptr().cast(), 2, 0) };
    assert_eq!(read, 2);
    assert_eq!(u16::from_be_bytes(stored), port_of(&out.stdout[0]), "{out}");
}

#[test]
fn report_line_for_ipv6() {
    if !have_ipv6("report_line_for_ipv6") {
        return;
    }
    let old = free_port("::1").to_string();
    let (read, write) = pipe();
    let mut cmd = moving(&["v6", &old], &old, "0");
    pass_report_fd(&mut cmd, &write);
    let out = run(cmd);
    drop(write);
    let report = report_lines(read);
    assert_eq!(out.stdout.len(), 1, "{out}");
    let port = port_of(&out.stdout[0]);
    assert_eq!(out.stdout, [format!("bound [::1]:{port}")], "{out}");
    assert_eq!(report, [format!("[::1]:{port}")], "{out}");
}

/// `0.0.0.0:P` and `[::]:P` (V6ONLY) in one process land on one new port.
#[test]
fn both_families_share_the_kernel_chosen_port() {
    if !have_ipv6("both_families_share_the_kernel_chosen_port") {
        return;
    }
    let old = free_port("127.0.0.1").to_string();
    let (read, write) = pipe();
    let mut cmd = moving(&["both", &old], &old, "0");
    pass_report_fd(&mut cmd, &write);
    let out = run(cmd);
    drop(write);
    let report = report_lines(read);
    assert_eq!(out.stdout.len(), 2, "{out}");
    let port = port_of(&out.stdout[0]);
    assert_eq!(
        out.stdout,
        [format!("bound 127.0.0.1:{port}"), format!("bound [::1]:{port}")],
        "{out}"
    );
    assert_eq!(report, [format!("127.0.0.1:{port}"), format!("[::1]:{port}")], "{out}");
    assert!(out.status.success(), "{out}");
}

#[test]
fn unusable_report_fd_still_moves_and_warns_once() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    // 987 is not open in the child; a regular file is not a pipe or socket.
    let dir = TempDir::new("report-file");
    let file = fs::File::create(dir.path().join("report")).expect("create file");
    for fd in ["987", "file"] {
        let mut cmd = moving(&["both", &old], &old, &new);
        if fd == "file" {
            pass_report_fd(&mut cmd, &file);
        } else {
            cmd.env("REBIND_REPORT_FD", fd);
        }
        let out = run(cmd);
        assert_eq!(out.stdout.first(), Some(&format!("bound 127.0.0.1:{new}")), "{out}");
        let warnings = out.stderr_lines();
        assert_eq!(warnings.len(), 1, "{out}");
        assert!(warnings[0].starts_with("rebind: "), "{out}");
        assert!(warnings[0].contains("REBIND_REPORT_FD="), "{out}");
        assert!(warnings[0].contains(&format!("127.0.0.1:{new}")), "{out}");
    }
    drop(file);
    let written = fs::read(dir.path().join("report")).expect("read file");
    assert!(written.is_empty(), "wrote into a regular file: {written:?}");
}

// ---------------------------------------------------------------------------
// Passthrough
// ---------------------------------------------------------------------------

#[test]
fn other_port_is_untouched() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let other = free_port("127.0.0.2").to_string();
    let out = run(moving(&["v4", &other, "addr=127.0.0.2"], &old, &new));
    assert_eq!(out.stdout, [format!("bound 127.0.0.2:{other}")], "{out}");
}

#[test]
fn unix_socket_is_untouched() {
    let dir = TempDir::new("unix");
    let path = dir.path().join("s");
    let path_text = path.to_str().expect("utf-8 temp path");
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let out = run(moving(&["unix", path_text], &old, &new));
    assert_eq!(out.stdout, [format!("bound unix:{path_text}")], "{out}");
}

/// The errno of a failed rewritten bind reaches the program.
#[test]
fn eaddrinuse_on_the_new_port_reaches_the_program() {
    let blocker = TcpListener::bind("127.0.0.1:0").expect("bind blocker");
    let new = blocker.local_addr().expect("blocker address").port().to_string();
    let old = free_port("127.0.0.1").to_string();
    let out = run(moving(&["v4", &old], &old, &new));
    assert_eq!(out.stdout, [errno_line(libc::EADDRINUSE)], "{out}");
    assert_eq!(out.status.code(), Some(1), "{out}");
    drop(blocker);
}

#[test]
fn second_bind_of_the_same_port_gets_eaddrinuse() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let out = run(moving(&["twice", &old], &old, &new));
    assert_eq!(
        out.stdout,
        [format!("bound 127.0.0.1:{new}"), errno_line(libc::EADDRINUSE)],
        "{out}"
    );
}

/// A short addrlen and a null address are the kernel's business: same
/// result (EINVAL) with and without the library.
#[test]
fn short_addrlen_and_null_address_pass_through() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    for mode in ["short", "null"] {
        let plain = run(fixture(&[mode, &old]));
        let moved = run(moving(&[mode, &old], &old, &new));
        assert_eq!(plain.stdout, [errno_line(libc::EINVAL)], "{plain}");
        assert_eq!(moved.stdout, plain.stdout, "{moved}");
    }
}

#[test]
fn unset_or_empty_configuration_is_a_silent_passthrough() {
    let port = free_port("127.0.0.2").to_string();
    let cases: &[&[(&str, &str)]] = &[
        &[],
        &[("REBIND_OLD_PORT", ""), ("REBIND_NEW_PORT", "")],
        &[("REBIND_REPORT_FD", "2")],
    ];
    for vars in cases {
        let out = run(preloaded(&["v4", &port, "addr=127.0.0.2"], vars));
        assert_eq!(out.stdout, [format!("bound 127.0.0.2:{port}")], "{out}");
        assert_eq!(out.stderr, "", "{out}");
    }
}

#[test]
fn invalid_value_passes_through_with_one_warning() {
    let port = free_port("127.0.0.2").to_string();
    let new = free_port("127.0.0.1").to_string();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("REBIND_OLD_PORT", "abc"), ("REBIND_NEW_PORT", &new)],
            "REBIND_OLD_PORT",
        ),
        (
            &[("REBIND_OLD_PORT", "0"), ("REBIND_NEW_PORT", &new)],
            "REBIND_OLD_PORT",
        ),
        (
            &[("REBIND_OLD_PORT", &port), ("REBIND_NEW_PORT", "70000")],
            "REBIND_NEW_PORT",
        ),
        (
            &[("REBIND_OLD_PORT", &port), ("REBIND_NEW_PORT", "-1")],
            "REBIND_NEW_PORT",
        ),
        (&[("REBIND_OLD_PORT", &port)], "REBIND_NEW_PORT"),
        (&[("REBIND_PORT_OLD", &port)], "REBIND_PORT_NEW"),
        (
            &[
                ("REBIND_OLD_PORT", &port),
                ("REBIND_NEW_PORT", &new),
                ("REBIND_REPORT_FD", "three"),
            ],
            "REBIND_REPORT_FD",
        ),
    ];
    for &(vars, name) in cases {
        // Passthrough: the fixture keeps 127.0.0.2 and the old port.
        let out = run(preloaded(&["v4", &port, "addr=127.0.0.2"], vars));
        assert_eq!(out.stdout, [format!("bound 127.0.0.2:{port}")], "{out}");
        let warnings = out.stderr_lines();
        assert_eq!(warnings.len(), 1, "{out}");
        assert!(warnings[0].starts_with(&format!("rebind: {name}")), "{out}");
        assert!(warnings[0].ends_with("bind() is not rewritten"), "{out}");
    }
}

// ---------------------------------------------------------------------------
// The library as a file
// ---------------------------------------------------------------------------

/// Defined function symbols (`T`, `t`, `W`, `i`) in `nm` output.
fn defined_functions(nm_output: &str) -> Vec<&str> {
    nm_output
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().rev();
            let name = fields.next()?;
            let kind = fields.next()?;
            matches!(kind, "T" | "t" | "W" | "i").then_some(name)
        })
        .collect()
}

/// `None` (with the reason printed) if `nm` is not installed.
fn nm(args: &[&str], file: &Path) -> Option<String> {
    match Command::new("nm").args(args).arg(file).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "nm {args:?} {}: {}\n{}",
                file.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            eprintln!("skipping: nm not found ({e})");
            None
        }
        Err(e) => panic!("run nm: {e}"),
    }
}

#[test]
fn exports_only_bind() {
    let Some(symbols) = nm(&["-D", "--defined-only"], lib()) else {
        return;
    };
    assert_eq!(defined_functions(&symbols), ["bind"], "nm -D output:\n{symbols}");
}

/// STYLE.md 7(b): if this file ever references the rlib, its `bind` is
/// linked into the test binary and hooks the tests' own binds.
#[test]
fn test_binary_does_not_define_bind() {
    let exe = std::env::current_exe().expect("current_exe");
    let Some(symbols) = nm(&["--defined-only"], &exe) else {
        return;
    };
    assert!(
        !defined_functions(&symbols).contains(&"bind"),
        "{} defines bind",
        exe.display()
    );
}

// ---------------------------------------------------------------------------
// A real program
// ---------------------------------------------------------------------------

/// `python3 -m http.server OLD` with `REBIND_NEW_PORT=0` is found through the
/// report line and answers `GET /` there: the flow wsproxy's wrap mode uses.
#[test]
fn python_http_server_moves_to_the_reported_port() {
    let python = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(python, Ok(status) if status.success()) {
        eprintln!("skipping python_http_server_moves_to_the_reported_port: no python3 ({python:?})");
        return;
    }
    let dir = TempDir::new("http");
    fs::write(dir.path().join("hello.txt"), "hello\n").expect("write hello.txt");
    let old = free_port("127.0.0.1");
    let old_text = old.to_string();
    let (read, write) = pipe();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", &old_text]).current_dir(dir.path());
    for var in REBIND_VARS {
        cmd.env_remove(var);
    }
    cmd.env("LD_PRELOAD", lib())
        .env("REBIND_OLD_PORT", &old_text)
        .env("REBIND_NEW_PORT", "0");
    pass_report_fd(&mut cmd, &write);
    let server = Proc::spawn(cmd);
    drop(write);
    let report = Lines::spawn(fs::File::from(read));
    let line = match report.next(Instant::now() + TIMEOUT) {
        Ok(Some(line)) => line,
        other => panic!("no report line from {}: {other:?}", server.what),
    };
    let addr: SocketAddr = line.parse().unwrap_or_else(|e| panic!("report line {line:?}: {e}"));
    assert!(addr.ip().is_loopback(), "{line}");
    assert_ne!(addr.port(), old, "{line}");
    let response = fetch(addr, b"GET /hello.txt HTTP/1.0\r\n\r\n");
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nhello\n"), "{response}");
    drop(server);
}

// ---------------------------------------------------------------------------
// scripts/rebind
// ---------------------------------------------------------------------------

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/rebind")
}

fn script_cmd(script: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(script);
    cmd.args(args);
    for var in REBIND_VARS {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn script_moves_the_port() {
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();
    let server = server_bin().to_str().expect("utf-8 fixture path");
    let mut cmd = script_cmd(&script(), &[&old, &new, server, "v4", &old]);
    cmd.env("REBIND_LIB", lib());
    let out = run(cmd);
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");
    assert_eq!(out.stderr, "", "{out}");
}

#[test]
fn script_usage_errors_exit_2() {
    let server = server_bin().to_str().expect("utf-8 fixture path");
    let cases: &[&[&str]] = &[
        &[],
        &["5901"],
        &["5901", "6000"],
        &["x", "6000", server, "env", "HOME"],
        &["0", "6000", server, "env", "HOME"],
        &["5901", "0", server, "env", "HOME"],
        &["5901", "65536", server, "env", "HOME"],
        &["5901", "-5", server, "env", "HOME"],
        &["5901", "60x", server, "env", "HOME"],
        &["5901", "", server, "env", "HOME"],
    ];
    for args in cases {
        let mut cmd = script_cmd(&script(), args);
        cmd.env("REBIND_LIB", lib());
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(2), "{out}");
        assert!(out.stderr.contains("usage: rebind OLD_PORT NEW_PORT COMMAND"), "{out}");
        assert!(out.stdout.is_empty(), "the command ran: {out}");
    }
}

/// Without `REBIND_LIB` the script finds `<dir>/../lib/wsproxy/librebind.so`
/// and puts it before the existing `LD_PRELOAD` entries.
#[test]
fn script_finds_the_installed_library_and_keeps_ld_preload() {
    let dir = TempDir::new("install");
    let bin = dir.path().join("bin");
    let libdir = dir.path().join("lib/wsproxy");
    fs::create_dir_all(&bin).expect("mkdir bin");
    fs::create_dir_all(&libdir).expect("mkdir lib/wsproxy");
    fs::copy(script(), bin.join("rebind")).expect("copy script");
    fs::copy(lib(), libdir.join("librebind.so")).expect("copy library");
    let installed = libdir.join("librebind.so");
    let server = server_bin().to_str().expect("utf-8 fixture path");
    let old = free_port("127.0.0.1").to_string();
    let new = free_port("127.0.0.1").to_string();

    let out = run(script_cmd(&bin.join("rebind"), &[&old, &new, server, "v4", &old]));
    assert_eq!(out.stdout, [format!("bound 127.0.0.1:{new}")], "{out}");

    let mut cmd = script_cmd(&bin.join("rebind"), &[&old, &new, server, "env", "LD_PRELOAD"]);
    cmd.env("LD_PRELOAD", lib());
    let out = run(cmd);
    assert_eq!(
        out.stdout,
        [format!("LD_PRELOAD={}:{}", installed.display(), lib().display())],
        "{out}"
    );
}

#[test]
fn script_without_library_says_how_to_get_one() {
    let dir = TempDir::new("nolib");
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    fs::copy(script(), bin.join("rebind")).expect("copy script");
    let server = server_bin().to_str().expect("utf-8 fixture path");
    let out = run(script_cmd(
        &bin.join("rebind"),
        &["5901", "6000", server, "env", "HOME"],
    ));
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr_lines(),
        ["rebind: librebind.so not found; run `make` or set REBIND_LIB"],
        "{out}"
    );
    assert!(out.stdout.is_empty(), "the command ran: {out}");
}
