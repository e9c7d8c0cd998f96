//! The RFC 7983 demultiplexer: what a datagram on a WebRTC 5-tuple carries, told from its first
//! byte (and, for SRTP, its second: RFC 5761 §4) before anything parses it.

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// STUN (first byte 0..=3): ICE checks and their answers.
    Stun,
    /// DTLS (20..=63): handshake records, alerts.
    Dtls,
    /// SRTP (128..=191, and a second byte that is no RTCP packet type).
    Rtp,
    /// SRTCP (128..=191, then an RTCP packet type 192..=223; RTP payload types 64..=95 with the
    /// marker bit would read the same and are never negotiated).
    Rtcp,
    /// Anything else (TURN channels, ZRTP, garbage).
    Unknown,
}

impl Datagram {
    /// Classifies `data`.
    #[inline]
    pub fn classify(data: &[u8]) -> Datagram {
        match data.first() {
            Some(0..=3) => Datagram::Stun,
            Some(20..=63) => Datagram::Dtls,
            Some(128..=191) if rtp::rtcp::is_rtcp(data) => Datagram::Rtcp,
            Some(128..=191) => Datagram::Rtp,
            _ => Datagram::Unknown,
        }
    }

    /// SRTP or SRTCP.
    pub fn is_media(self) -> bool {
        matches!(self, Datagram::Rtp | Datagram::Rtcp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_has_one_class() {
        let class = |first: u8, second: u8| Datagram::classify(&[first, second]);
        assert_eq!(class(0, 1), Datagram::Stun);
        assert_eq!(class(3, 0), Datagram::Stun);
        assert_eq!(class(4, 0), Datagram::Unknown);
        assert_eq!(class(20, 0), Datagram::Dtls);
        assert_eq!(class(63, 0), Datagram::Dtls);
        assert_eq!(class(64, 0), Datagram::Unknown);
        assert_eq!(class(127, 0), Datagram::Unknown);
        assert_eq!(class(0x80, 96), Datagram::Rtp);
        assert_eq!(class(0x80, 96 | 0x80), Datagram::Rtp, "marker bit on PT 96");
        assert_eq!(class(0x80, 200), Datagram::Rtcp, "SR");
        assert_eq!(class(0x81, 205), Datagram::Rtcp, "transport feedback");
        assert_eq!(class(191, 223), Datagram::Rtcp);
        assert_eq!(class(192, 200), Datagram::Unknown);
        assert_eq!(
            Datagram::classify(&[0x80]),
            Datagram::Rtp,
            "too short for RTCP"
        );
        assert_eq!(Datagram::classify(&[]), Datagram::Unknown);
        assert!(Datagram::Rtcp.is_media() && Datagram::Rtp.is_media());
        assert!(!Datagram::Stun.is_media());
    }
}
