//! `SocketAddr` <-> `sockaddr_in`/`sockaddr_in6` without allocation.
//!
//! Decoding works on the raw bytes the kernel wrote (a `sockaddr` in a receive buffer is not
//! aligned), so it needs no unsafe code. IPv4-mapped IPv6 peers of a dual-stack socket are
//! reported as `SocketAddr::V4`, and V4 destinations are mapped back when the socket is IPv6,
//! so sessions see one address per peer whatever the socket family.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// Bytes reserved for a source address (`sockaddr_in6` is 28).
pub(super) const NAME_LEN: usize = 48;

/// Reads a `sockaddr_in`/`sockaddr_in6` from the bytes the kernel wrote.
pub(super) fn decode(bytes: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes(bytes.get(0..2)?.try_into().ok()?);
    let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(Ipv4Addr::from(ip).into(), port))
        }
        libc::AF_INET6 => {
            let flowinfo = u32::from_be_bytes(bytes.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
            let scope_id = u32::from_ne_bytes(bytes.get(24..28)?.try_into().ok()?);
            let ip = Ipv6Addr::from(ip);
            if let Some(v4) = ip.to_ipv4_mapped() {
                return Some(SocketAddr::new(v4.into(), port));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip, port, flowinfo, scope_id,
            )))
        }
        _ => None,
    }
}

/// Writes `dst` as the sockaddr a socket of the given family accepts; returns its length, or
/// `None` if the family cannot reach it (an IPv6 destination from an IPv4 socket).
pub(super) fn encode(
    dst: SocketAddr,
    v6_socket: bool,
    out: &mut libc::sockaddr_storage,
) -> Option<libc::socklen_t> {
    let (ip6, port, flowinfo, scope_id) = match (dst, v6_socket) {
        (SocketAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in.
            unsafe {
                (out as *mut libc::sockaddr_storage)
                    .cast::<libc::sockaddr_in>()
                    .write(sin)
            };
            return Some(size_of::<libc::sockaddr_in>() as libc::socklen_t);
        }
        (SocketAddr::V6(a), false) => {
            let v4 = a.ip().to_ipv4_mapped()?;
            return encode(SocketAddr::new(v4.into(), a.port()), false, out);
        }
        (SocketAddr::V4(a), true) => (a.ip().to_ipv6_mapped(), a.port(), 0, 0),
        (SocketAddr::V6(a), true) => (*a.ip(), a.port(), a.flowinfo(), a.scope_id()),
    };
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: port.to_be(),
        sin6_flowinfo: flowinfo.to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: ip6.octets(),
        },
        sin6_scope_id: scope_id,
    };
    // SAFETY: sockaddr_storage is larger than and at least as aligned as sockaddr_in6.
    unsafe {
        (out as *mut libc::sockaddr_storage)
            .cast::<libc::sockaddr_in6>()
            .write(sin6)
    };
    Some(size_of::<libc::sockaddr_in6>() as libc::socklen_t)
}

/// The bytes of a `sockaddr_storage` the kernel filled, limited to `len`.
pub(super) fn storage_bytes(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> &[u8] {
    let len = (len as usize).min(size_of::<libc::sockaddr_storage>());
    // SAFETY: sockaddr_storage is plain old data, fully initialised (zeroed at allocation), and
    // `len` is clamped to its size.
    unsafe {
        std::slice::from_raw_parts((storage as *const libc::sockaddr_storage).cast::<u8>(), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(addr: SocketAddr, v6_socket: bool) -> Option<SocketAddr> {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = encode(addr, v6_socket, &mut storage)?;
        decode(storage_bytes(&storage, len))
    }

    #[test]
    fn v4_and_v6_round_trip() {
        let v4: SocketAddr = "127.0.0.1:5004".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(round_trip(v4, false), Some(v4));
        assert_eq!(
            round_trip(v4, true),
            Some(v4),
            "mapped on a v6 socket, canonical on decode"
        );
        assert_eq!(round_trip(v6, true), Some(v6));
        assert_eq!(round_trip(v6, false), None);
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:9".parse().unwrap();
        assert_eq!(
            round_trip(mapped, false),
            Some("10.0.0.1:9".parse().unwrap())
        );
    }

    #[test]
    fn decode_rejects_short_and_unknown() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0; 28]), None);
    }
}
