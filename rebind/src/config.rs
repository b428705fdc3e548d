//! Configuration: read from the environment once by an ELF constructor and
//! kept in atomics, so `bind` never touches the environment.

use core::ffi::CStr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU16, AtomicU64, Ordering};

use libc::c_int;

use crate::report;
use crate::rewrite::Ports;

/// Set (last, with Release) once the constructor found a valid
/// configuration; until then every bind passes through.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static OLD: AtomicU16 = AtomicU16::new(0);
/// The configured new port; 0 means "let the kernel choose".
static NEW: AtomicU16 = AtomicU16::new(0);
/// With `NEW == 0`: the port the kernel chose for the first successful
/// rewritten bind (0 until then), reused by later rewritten binds.
static CHOSEN: AtomicU16 = AtomicU16::new(0);
/// The report descriptor, or -1.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
/// Whether the report descriptor was an open pipe or socket at startup,
/// and which one (device and inode).
static REPORT_OPEN: AtomicBool = AtomicBool::new(false);
static REPORT_DEV: AtomicU64 = AtomicU64::new(0);
static REPORT_INO: AtomicU64 = AtomicU64::new(0);
/// The shared-port descriptor (`REBIND_STATE_FD`), or -1, and which
/// regular file it was at startup.
static STATE_FD: AtomicI32 = AtomicI32::new(-1);
static STATE_DEV: AtomicU64 = AtomicU64::new(0);
static STATE_INO: AtomicU64 = AtomicU64::new(0);

/// The ELF constructor: the dynamic loader runs everything in
/// `.init_array` after relocating the library and before `main`.
#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    let saved = crate::real::errno();
    // Look up the real bind now, outside any signal handler, so the hook
    // normally finds it cached. A failure is reported by the hook itself.
    let _ = crate::real::bind();
    // SAFETY: the constructor runs before `main`, while no other thread can
    // change the environment, and the slices are dropped before it returns.
    let env = unsafe { Env::from_process() };
    match decide(&env) {
        Decision::Off => {}
        Decision::Invalid(invalid) => report::warn_invalid(&invalid),
        Decision::On(config) => apply(config),
    }
    crate::real::set_errno(saved);
}

fn apply(config: Config) {
    OLD.store(config.ports.old, Ordering::Relaxed);
    NEW.store(config.ports.new, Ordering::Relaxed);
    if let Some(fd) = config.report_fd {
        // A descriptor that is not usable is reported by the first
        // rewritten bind, so only the process that binds complains.
        if let Some(id) = report::identity(fd, report::PIPE_OR_SOCKET) {
            REPORT_DEV.store(id.dev, Ordering::Relaxed);
            REPORT_INO.store(id.ino, Ordering::Relaxed);
            REPORT_OPEN.store(true, Ordering::Relaxed);
        }
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
    // An unusable state descriptor only loses the sharing across `exec`.
    if let Some(fd) = config.state_fd
        && let Some(id) = report::identity(fd, crate::shared::REGULAR_FILE)
    {
        STATE_DEV.store(id.dev, Ordering::Relaxed);
        STATE_INO.store(id.ino, Ordering::Relaxed);
        STATE_FD.store(fd, Ordering::Relaxed);
    }
    ACTIVE.store(true, Ordering::Release);
}

/// The ports to apply now, or `None` for "pass everything through".
///
/// With `REBIND_NEW_PORT=0`, `new` is the port chosen by the first
/// successful rewritten bind, or still 0 before that.
pub(crate) fn ports() -> Option<Ports> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let old = OLD.load(Ordering::Relaxed);
    let mut new = NEW.load(Ordering::Relaxed);
    if new == 0 {
        new = CHOSEN.load(Ordering::Acquire);
        if new == 0
            && let Some(port) = crate::shared::load()
        {
            // Another process of the command chose it: adopt it for good.
            remember_chosen(port);
            new = port;
        }
    }
    Some(Ports { old, new })
}

/// Records the port a rewritten bind actually got, if the kernel chose it
/// and no earlier bind has already fixed it.
pub(crate) fn remember_chosen(port: u16) {
    if port != 0 && NEW.load(Ordering::Relaxed) == 0 {
        // Losing the race to another thread's first bind is fine: that
        // thread's port is the one later binds will use.
        if CHOSEN
            .compare_exchange(0, port, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            crate::shared::store(port);
        }
    }
}

/// The shared-port descriptor, if one was inherited, with its identity at
/// startup.
pub(crate) fn state_fd() -> Option<(c_int, report::Identity)> {
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let fd = STATE_FD.load(Ordering::Relaxed);
    (fd >= 0).then(|| {
        let id = report::Identity {
            dev: STATE_DEV.load(Ordering::Relaxed),
            ino: STATE_INO.load(Ordering::Relaxed),
        };
        (fd, id)
    })
}

/// The report descriptor, if configured, with its identity at startup
/// (`None` if it was not an open pipe or socket then).
pub(crate) fn report_fd() -> Option<(c_int, Option<report::Identity>)> {
    // ACTIVE (Acquire) orders these Relaxed loads after the constructor.
    if !ACTIVE.load(Ordering::Acquire) {
        return None;
    }
    let fd = REPORT_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return None;
    }
    let id = REPORT_OPEN.load(Ordering::Relaxed).then(|| report::Identity {
        dev: REPORT_DEV.load(Ordering::Relaxed),
        ino: REPORT_INO.load(Ordering::Relaxed),
    });
    Some((fd, id))
}

/// The raw values of the variables the library reads; `None` for unset or
/// empty.
#[derive(Default)]
pub(crate) struct Env<'a> {
    /// `REBIND_OLD_PORT`
    pub(crate) old_port: Option<&'a [u8]>,
    /// `REBIND_NEW_PORT`
    pub(crate) new_port: Option<&'a [u8]>,
    /// `REBIND_PORT_OLD` (websockify's `rebind` script)
    pub(crate) port_old: Option<&'a [u8]>,
    /// `REBIND_PORT_NEW` (websockify's `rebind` script)
    pub(crate) port_new: Option<&'a [u8]>,
    /// `REBIND_REPORT_FD`
    pub(crate) report_fd: Option<&'a [u8]>,
    /// `REBIND_STATE_FD`
    pub(crate) state_fd: Option<&'a [u8]>,
}

impl Env<'_> {
    /// Reads the variables with `getenv` (no allocation).
    ///
    /// # Safety
    ///
    /// Nothing may modify the environment while the result is alive.
    unsafe fn from_process() -> Self {
        // SAFETY: forwarded to our caller.
        unsafe {
            Self {
                old_port: var(c"REBIND_OLD_PORT"),
                new_port: var(c"REBIND_NEW_PORT"),
                port_old: var(c"REBIND_PORT_OLD"),
                port_new: var(c"REBIND_PORT_NEW"),
                report_fd: var(c"REBIND_REPORT_FD"),
                state_fd: var(c"REBIND_STATE_FD"),
            }
        }
    }
}

/// `getenv(name)`, with the empty string counted as unset.
///
/// # Safety
///
/// Nothing may modify the environment while the result is alive.
unsafe fn var<'a>(name: &CStr) -> Option<&'a [u8]> {
    // SAFETY: `name` is NUL-terminated.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a non-null getenv result is a NUL-terminated string that stays
    // valid until the environment changes (excluded by our caller).
    let bytes = unsafe { CStr::from_ptr(value) }.to_bytes();
    (!bytes.is_empty()).then_some(bytes)
}

/// A valid configuration.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) ports: Ports,
    pub(crate) report_fd: Option<c_int>,
    pub(crate) state_fd: Option<c_int>,
}

/// A variable that is set (or missing from a pair that is set) but unusable.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Invalid<'a> {
    pub(crate) name: &'static str,
    /// `None`: the variable is missing while its partner is set.
    pub(crate) value: Option<&'a [u8]>,
    /// What a valid value looks like, for the warning.
    pub(crate) expected: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision<'a> {
    /// Nothing configured: silent passthrough.
    Off,
    /// Something set but unusable: passthrough plus one warning line.
    Invalid(Invalid<'a>),
    On(Config),
}

const OLD_EXPECTED: &str = "a port number 1-65535";
const NEW_EXPECTED: &str = "a port number 0-65535";
const FD_EXPECTED: &str = "a file descriptor number";

/// Chooses the variable pair and validates it.
///
/// The wsproxy/websockify pair (`REBIND_OLD_PORT`, `REBIND_NEW_PORT`) wins
/// if either of its variables is set; otherwise websockify's script names
/// (`REBIND_PORT_OLD`, `REBIND_PORT_NEW`) are used. Pairs are never mixed.
pub(crate) fn decide<'a>(env: &Env<'a>) -> Decision<'a> {
    let (old_name, old, new_name, new) = if env.old_port.is_some() || env.new_port.is_some() {
        ("REBIND_OLD_PORT", env.old_port, "REBIND_NEW_PORT", env.new_port)
    } else if env.port_old.is_some() || env.port_new.is_some() {
        ("REBIND_PORT_OLD", env.port_old, "REBIND_PORT_NEW", env.port_new)
    } else {
        return Decision::Off;
    };
    let invalid = |name, value, expected| Decision::Invalid(Invalid { name, value, expected });
    let Some(old_port) = old.and_then(parse_port).filter(|&port| port != 0) else {
        return invalid(old_name, old, OLD_EXPECTED);
    };
    let Some(new_port) = new.and_then(parse_port) else {
        return invalid(new_name, new, NEW_EXPECTED);
    };
    let mut fds = [
        (env.report_fd, "REBIND_REPORT_FD", None),
        (env.state_fd, "REBIND_STATE_FD", None),
    ];
    for (value, name, fd) in &mut fds {
        if let Some(value) = *value {
            match parse_fd(value) {
                Some(parsed) => *fd = Some(parsed),
                None => return invalid(name, Some(value), FD_EXPECTED),
            }
        }
    }
    let [(_, _, report_fd), (_, _, state_fd)] = fds;
    Decision::On(Config {
        ports: Ports {
            old: old_port,
            new: new_port,
        },
        report_fd,
        state_fd,
    })
}

/// Decimal digits only, `0..=65535`.
pub(crate) fn parse_port(text: &[u8]) -> Option<u16> {
    parse_decimal(text, u32::from(u16::MAX)).and_then(|n| u16::try_from(n).ok())
}

/// Decimal digits only, `0..=c_int::MAX`.
pub(crate) fn parse_fd(text: &[u8]) -> Option<c_int> {
    parse_decimal(text, c_int::MAX.unsigned_abs()).and_then(|n| c_int::try_from(n).ok())
}

/// A non-empty run of ASCII digits whose value is at most `max` (leading
/// zeros allowed; no sign, spaces or radix prefix).
fn parse_decimal(text: &[u8], max: u32) -> Option<u32> {
    if text.is_empty() {
        return None;
    }
    let mut value: u32 = 0;
    for &byte in text {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u32::from(byte.wrapping_sub(b'0')))?;
        if value > max {
            return None;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse() {
        let cases: &[(&str, Option<u16>)] = &[
            ("0", Some(0)),
            ("1", Some(1)),
            ("5901", Some(5901)),
            ("65535", Some(65535)),
            ("0000080", Some(80)),
            ("000000000000000000000000065535", Some(65535)),
            ("65536", None),
            ("4294967296", None),
            ("99999999999999999999999", None),
            ("", None),
            ("-1", None),
            ("+80", None),
            (" 80", None),
            ("80 ", None),
            ("0x50", None),
            ("8o", None),
            ("٣", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_port(text.as_bytes()), want, "{text:?}");
        }
    }

    #[test]
    fn fds_parse() {
        assert_eq!(parse_fd(b"3"), Some(3));
        assert_eq!(parse_fd(b"0"), Some(0));
        assert_eq!(parse_fd(b"2147483647"), Some(c_int::MAX));
        assert_eq!(parse_fd(b"2147483648"), None);
        assert_eq!(parse_fd(b"-1"), None);
        assert_eq!(parse_fd(b"three"), None);
    }

    fn env<'a>(pairs: &[(&str, &'a str)]) -> Env<'a> {
        let mut env = Env::default();
        for &(name, value) in pairs {
            let slot = match name {
                "REBIND_OLD_PORT" => &mut env.old_port,
                "REBIND_NEW_PORT" => &mut env.new_port,
                "REBIND_PORT_OLD" => &mut env.port_old,
                "REBIND_PORT_NEW" => &mut env.port_new,
                "REBIND_REPORT_FD" => &mut env.report_fd,
                "REBIND_STATE_FD" => &mut env.state_fd,
                _ => unreachable!("unknown variable {name}"),
            };
            *slot = Some(value.as_bytes());
        }
        env
    }

    fn on(old: u16, new: u16, report_fd: Option<c_int>) -> Decision<'static> {
        Decision::On(Config {
            ports: Ports { old, new },
            report_fd,
            state_fd: None,
        })
    }

    fn invalid<'a>(name: &'static str, value: Option<&'a str>) -> Decision<'a> {
        let expected = match name {
            "REBIND_OLD_PORT" | "REBIND_PORT_OLD" => OLD_EXPECTED,
            "REBIND_REPORT_FD" | "REBIND_STATE_FD" => FD_EXPECTED,
            _ => NEW_EXPECTED,
        };
        Decision::Invalid(Invalid {
            name,
            value: value.map(str::as_bytes),
            expected,
        })
    }

    #[test]
    fn nothing_set_is_off() {
        assert_eq!(decide(&env(&[])), Decision::Off);
        // A report fd alone configures nothing.
        assert_eq!(decide(&env(&[("REBIND_REPORT_FD", "3")])), Decision::Off);
    }

    #[test]
    fn library_names() {
        let e = env(&[("REBIND_OLD_PORT", "5901"), ("REBIND_NEW_PORT", "40000")]);
        assert_eq!(decide(&e), on(5901, 40000, None));
    }

    #[test]
    fn script_names() {
        let e = env(&[("REBIND_PORT_OLD", "5901"), ("REBIND_PORT_NEW", "40000")]);
        assert_eq!(decide(&e), on(5901, 40000, None));
    }

    #[test]
    fn library_names_win_and_pairs_are_not_mixed() {
        let e = env(&[
            ("REBIND_OLD_PORT", "1"),
            ("REBIND_NEW_PORT", "2"),
            ("REBIND_PORT_OLD", "3"),
            ("REBIND_PORT_NEW", "4"),
        ]);
        assert_eq!(decide(&e), on(1, 2, None));
        let e = env(&[("REBIND_OLD_PORT", "1"), ("REBIND_PORT_NEW", "4")]);
        assert_eq!(decide(&e), invalid("REBIND_NEW_PORT", None));
    }

    #[test]
    fn new_port_zero_and_report_fd() {
        let e = env(&[
            ("REBIND_OLD_PORT", "5901"),
            ("REBIND_NEW_PORT", "0"),
            ("REBIND_REPORT_FD", "7"),
        ]);
        assert_eq!(decide(&e), on(5901, 0, Some(7)));
        let e = env(&[
            ("REBIND_OLD_PORT", "5901"),
            ("REBIND_NEW_PORT", "0"),
            ("REBIND_STATE_FD", "8"),
        ]);
        let Decision::On(config) = decide(&e) else {
            unreachable!("valid configuration refused");
        };
        assert_eq!(config.state_fd, Some(8));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let cases: &[(&[(&str, &str)], Decision<'_>)] = &[
            (
                &[("REBIND_OLD_PORT", "0"), ("REBIND_NEW_PORT", "1")],
                invalid("REBIND_OLD_PORT", Some("0")),
            ),
            (
                &[("REBIND_OLD_PORT", "x"), ("REBIND_NEW_PORT", "1")],
                invalid("REBIND_OLD_PORT", Some("x")),
            ),
            (
                &[("REBIND_OLD_PORT", "1"), ("REBIND_NEW_PORT", "70000")],
                invalid("REBIND_NEW_PORT", Some("70000")),
            ),
            (&[("REBIND_NEW_PORT", "1")], invalid("REBIND_OLD_PORT", None)),
            (&[("REBIND_PORT_OLD", "5901")], invalid("REBIND_PORT_NEW", None)),
            (
                &[
                    ("REBIND_OLD_PORT", "1"),
                    ("REBIND_NEW_PORT", "2"),
                    ("REBIND_REPORT_FD", "-1"),
                ],
                invalid("REBIND_REPORT_FD", Some("-1")),
            ),
            (
                &[
                    ("REBIND_OLD_PORT", "1"),
                    ("REBIND_NEW_PORT", "0"),
                    ("REBIND_STATE_FD", "x"),
                ],
                invalid("REBIND_STATE_FD", Some("x")),
            ),
        ];
        for (vars, want) in cases {
            assert_eq!(&decide(&env(vars)), want, "{vars:?}");
        }
    }

    #[test]
    fn unit_tests_run_with_the_hook_inactive() {
        // STYLE.md rule 8: this test binary links the exported `bind`, so
        // it must stay a passthrough here.
        assert_eq!(ports(), None);
    }
}
