//! The rewrite rule: pure functions on stack copies of socket addresses.

use libc::{sockaddr_in, sockaddr_in6};

use crate::addr::Addr;

/// The configured move: binds of `old` go to `new` (0: the kernel picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ports {
    pub(crate) old: u16,
    pub(crate) new: u16,
}

/// The loopback address a bind was moved to; decides the report line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Loopback {
    /// `127.0.0.1`
    V4,
    /// `::1`
    V6,
    /// `::ffff:127.0.0.1` (reachable as `127.0.0.1`)
    Mapped,
}

/// `::1`
const V6_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// `::ffff:127.0.0.1`
const MAPPED_LOOPBACK: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1];

/// Rewrites `addr` if its port is `ports.old`; `None` means "pass through".
pub(crate) fn rewrite(addr: &Addr, ports: Ports) -> Option<(Addr, Loopback)> {
    match addr {
        Addr::V4(sin) => rewrite_v4(sin, ports).map(|s| (Addr::V4(s), Loopback::V4)),
        Addr::V6(sin6) => rewrite_v6(sin6, ports).map(|(s, host)| (Addr::V6(s), host)),
    }
}

/// Any IPv4 address on the old port becomes `127.0.0.1:NEW`.
pub(crate) fn rewrite_v4(sin: &sockaddr_in, ports: Ports) -> Option<sockaddr_in> {
    if u16::from_be(sin.sin_port) != ports.old {
        return None;
    }
    let mut moved = *sin;
    moved.sin_port = ports.new.to_be();
    moved.sin_addr.s_addr = libc::INADDR_LOOPBACK.to_be();
    Some(moved)
}

/// Any IPv6 address on the old port becomes `[::1]:NEW` (scope id cleared,
/// flow info kept); a v4-mapped one becomes `[::ffff:127.0.0.1]:NEW`.
pub(crate) fn rewrite_v6(sin6: &sockaddr_in6, ports: Ports) -> Option<(sockaddr_in6, Loopback)> {
    if u16::from_be(sin6.sin6_port) != ports.old {
        return None;
    }
    let (addr, host) = if is_v4_mapped(&sin6.sin6_addr.s6_addr) {
        (MAPPED_LOOPBACK, Loopback::Mapped)
    } else {
        (V6_LOOPBACK, Loopback::V6)
    };
    let mut moved = *sin6;
    moved.sin6_port = ports.new.to_be();
    moved.sin6_addr.s6_addr = addr;
    moved.sin6_scope_id = 0;
    Some((moved, host))
}

/// `::ffff:a.b.c.d`
fn is_v4_mapped(addr: &[u8; 16]) -> bool {
    matches!(addr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, _, _, _, _])
}

#[cfg(test)]
// `AF_INET as sa_family_t` is how C spells it; the values fit.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
mod tests {
    use super::*;
    use libc::sa_family_t;

    const PORTS: Ports = Ports { old: 5901, new: 40123 };

    fn v4(addr: [u8; 4], port: u16) -> sockaddr_in {
        sockaddr_in {
            sin_family: libc::AF_INET as sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes(addr).to_be(),
            },
            sin_zero: [0; 8],
        }
    }

    fn v6(addr: [u8; 16], port: u16) -> sockaddr_in6 {
        sockaddr_in6 {
            sin6_family: libc::AF_INET6 as sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0x0001_2345u32.to_be(),
            sin6_addr: libc::in6_addr { s6_addr: addr },
            sin6_scope_id: 3,
        }
    }

    fn v4_bytes(sin: &sockaddr_in) -> [u8; 4] {
        u32::from_be(sin.sin_addr.s_addr).to_be_bytes()
    }

    #[test]
    fn v4_wildcard_and_specific_move_to_loopback() {
        for addr in [[0, 0, 0, 0], [192, 0, 2, 1], [127, 0, 0, 2], [127, 0, 0, 1]] {
            let moved = rewrite_v4(&v4(addr, 5901), PORTS);
            let Some(moved) = moved else {
                unreachable!("{addr:?} was not moved");
            };
            assert_eq!(v4_bytes(&moved), [127, 0, 0, 1]);
            assert_eq!(u16::from_be(moved.sin_port), 40123);
            assert_eq!(i32::from(moved.sin_family), libc::AF_INET);
        }
    }

    #[test]
    fn v4_other_port_is_left_alone() {
        for port in [0, 80, 5900, 5902, 40123] {
            assert!(rewrite_v4(&v4([0, 0, 0, 0], port), PORTS).is_none());
        }
    }

    #[test]
    fn port_is_compared_in_host_order() {
        // 5901 = 0x170d; its byte swap 0x0d17 = 3351 must not match.
        assert!(rewrite_v4(&v4([0, 0, 0, 0], 3351), PORTS).is_none());
    }

    #[test]
    fn v6_moves_to_loopback_and_clears_scope_keeping_flowinfo() {
        let link_local = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for addr in [[0; 16], link_local, V6_LOOPBACK] {
            let original = v6(addr, 5901);
            let Some((moved, host)) = rewrite_v6(&original, PORTS) else {
                unreachable!("{addr:?} was not moved");
            };
            assert_eq!(host, Loopback::V6);
            assert_eq!(moved.sin6_addr.s6_addr, V6_LOOPBACK);
            assert_eq!(u16::from_be(moved.sin6_port), 40123);
            assert_eq!(moved.sin6_scope_id, 0);
            assert_eq!(moved.sin6_flowinfo, original.sin6_flowinfo);
            assert_eq!(i32::from(moved.sin6_family), libc::AF_INET6);
        }
    }

    #[test]
    fn v4_mapped_moves_to_mapped_loopback() {
        let any = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0];
        let specific = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1];
        for addr in [any, specific] {
            let Some((moved, host)) = rewrite_v6(&v6(addr, 5901), PORTS) else {
                unreachable!("{addr:?} was not moved");
            };
            assert_eq!(host, Loopback::Mapped);
            assert_eq!(moved.sin6_addr.s6_addr, MAPPED_LOOPBACK);
            assert_eq!(u16::from_be(moved.sin6_port), 40123);
        }
    }

    #[test]
    fn almost_mapped_is_plain_v6() {
        // ::fffe:0:0 and ::ffff:0:0:0 are not v4-mapped.
        assert!(!is_v4_mapped(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 0, 0, 0, 0]));
        assert!(!is_v4_mapped(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn v6_other_port_is_byte_identical_none() {
        assert!(rewrite_v6(&v6([0; 16], 5900), PORTS).is_none());
    }

    #[test]
    fn new_port_zero_asks_the_kernel() {
        let ports = Ports { old: 5901, new: 0 };
        let Some(moved) = rewrite_v4(&v4([0, 0, 0, 0], 5901), ports) else {
            unreachable!("not moved");
        };
        assert_eq!(moved.sin_port, 0);
    }

    #[test]
    fn rewrite_dispatches_on_family() {
        let a = Addr::V4(v4([0, 0, 0, 0], 5901));
        assert!(matches!(rewrite(&a, PORTS), Some((Addr::V4(_), Loopback::V4))));
        let a = Addr::V6(v6([0; 16], 5901));
        assert!(matches!(rewrite(&a, PORTS), Some((Addr::V6(_), Loopback::V6))));
        let a = Addr::V6(v6([0; 16], 1));
        assert!(rewrite(&a, PORTS).is_none());
    }
}
