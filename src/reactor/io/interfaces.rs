//! The host's interface addresses, for ICE host candidates when the node binds the unspecified
//! address (`getifaddrs`).

use std::net::{IpAddr, Ipv6Addr};

/// The IP addresses of the host's interfaces that are up, without IPv6 link-local ones (they
/// need a scope id that SDP candidates cannot carry). Empty when the list cannot be read.
pub fn interface_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below with freeifaddrs; every
    // pointer is checked for null and only read while the list is alive.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut node = list;
        while !node.is_null() {
            let entry = &*node;
            let up = entry.ifa_flags & libc::IFF_UP as u32 != 0;
            if up && !entry.ifa_addr.is_null() {
                match i32::from((*entry.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if ip.segments()[0] & 0xffc0 != 0xfe80 {
                            out.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            node = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loopback_interface_is_listed() {
        let addresses = interface_addresses();
        assert!(addresses.iter().any(IpAddr::is_loopback), "{addresses:?}");
    }
}
