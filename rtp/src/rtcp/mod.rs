//! RTCP (RFC 3550 §6) and the feedback messages WebRTC uses (RFC 4585, RFC 5104, REMB,
//! transport-wide congestion control): borrowing parsers and writers into caller buffers.
//!
//! Every packet type has `parse(&[u8])` for one whole RTCP packet, `encoded_len()` and
//! `write_to(&mut [u8]) -> Result<usize, Error>`. [`RtcpIter`] walks a compound packet.

mod bye;
mod fir;
mod items;
mod nack;
mod pli;
mod remb;
mod rr;
mod sdes;
mod sr;
mod twcc;
mod twcc_builder;

pub use bye::Bye;
pub use fir::{Fir, FirEntry};
pub use items::{Items, ItemsIter, WireItem};
pub use nack::{Nack, NackPair};
pub use pli::Pli;
pub use remb::Remb;
pub use rr::{ReceiverReport, ReportBlock};
pub use sdes::{Sdes, SdesChunk, SdesChunks};
pub use sr::SenderReport;
pub use twcc::{PacketStatus, TransportCc, TransportCcPackets};
pub use twcc_builder::TransportCcBuilder;
pub(crate) use twcc_builder::MIN_FEEDBACK_LEN;

use crate::Error;

/// RTCP packet types (RFC 3550 §12.1, RFC 4585 §6.1).
pub(crate) const PT_SR: u8 = 200;
pub(crate) const PT_RR: u8 = 201;
pub(crate) const PT_SDES: u8 = 202;
pub(crate) const PT_BYE: u8 = 203;
pub(crate) const PT_RTPFB: u8 = 205;
pub(crate) const PT_PSFB: u8 = 206;

/// Feedback message types (FMT) in the count field.
pub(crate) const FMT_NACK: u8 = 1;
pub(crate) const FMT_TWCC: u8 = 15;
pub(crate) const FMT_PLI: u8 = 1;
pub(crate) const FMT_FIR: u8 = 4;
pub(crate) const FMT_AFB: u8 = 15;

/// Largest RTCP packet the 16-bit length field can describe.
const MAX_PACKET_LEN: usize = (u16::MAX as usize + 1) * 4;

/// Whether a datagram on a muxed RTP/RTCP port is RTCP: RFC 5761 §4 separates the two by the
/// second octet, which is an RTCP packet type in 192..=223 and never an RTP marker+PT there
/// (RTP payload types 64..=95 are avoided for that reason).
pub fn is_rtcp(packet: &[u8]) -> bool {
    packet.len() >= 2 && (192..=223).contains(&packet[1])
}

/// One RTCP packet of a compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rtcp<'a> {
    /// SR, RFC 3550 §6.4.1.
    SenderReport(SenderReport<'a>),
    /// RR, RFC 3550 §6.4.2.
    ReceiverReport(ReceiverReport<'a>),
    /// SDES, RFC 3550 §6.5.
    Sdes(Sdes<'a>),
    /// BYE, RFC 3550 §6.6.
    Bye(Bye<'a>),
    /// Picture Loss Indication, RFC 4585 §6.3.1.
    Pli(Pli),
    /// Full Intra Request, RFC 5104 §4.3.1.
    Fir(Fir<'a>),
    /// Generic NACK, RFC 4585 §6.2.1.
    Nack(Nack<'a>),
    /// Receiver Estimated Maximum Bitrate, draft-alvestrand-rmcat-remb.
    Remb(Remb<'a>),
    /// Transport-wide congestion control feedback, draft-holmer-rmcat-transport-wide-cc.
    TransportCc(TransportCc<'a>),
    /// Any other packet, kept verbatim.
    Unknown {
        /// Packet type.
        pt: u8,
        /// Count or feedback message type field.
        fmt: u8,
        /// The whole packet, header and padding included.
        bytes: &'a [u8],
    },
}

impl<'a> Rtcp<'a> {
    /// Parses the first RTCP packet in `buf`; returns it and its length on the wire.
    pub fn parse(buf: &'a [u8]) -> Result<(Self, usize), Error> {
        let (h, body) = split(buf)?;
        let packet = match (h.pt, h.count) {
            (PT_SR, n) => Rtcp::SenderReport(SenderReport::from_body(n, body)?),
            (PT_RR, n) => Rtcp::ReceiverReport(ReceiverReport::from_body(n, body)?),
            (PT_SDES, n) => Rtcp::Sdes(Sdes::from_body(n, body)?),
            (PT_BYE, n) => Rtcp::Bye(Bye::from_body(n, body)?),
            (PT_RTPFB, FMT_NACK) => Rtcp::Nack(Nack::from_body(body)?),
            (PT_RTPFB, FMT_TWCC) => Rtcp::TransportCc(TransportCc::from_body(body)?),
            (PT_PSFB, FMT_PLI) => Rtcp::Pli(Pli::from_body(body)?),
            (PT_PSFB, FMT_FIR) => Rtcp::Fir(Fir::from_body(body)?),
            (PT_PSFB, FMT_AFB) if Remb::is_remb(body) => Rtcp::Remb(Remb::from_body(body)?),
            (pt, fmt) => Rtcp::Unknown {
                pt,
                fmt,
                bytes: &buf[..h.len],
            },
        };
        Ok((packet, h.len))
    }

    /// Bytes [`write_to`](Self::write_to) writes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Rtcp::SenderReport(p) => p.encoded_len(),
            Rtcp::ReceiverReport(p) => p.encoded_len(),
            Rtcp::Sdes(p) => p.encoded_len(),
            Rtcp::Bye(p) => p.encoded_len(),
            Rtcp::Pli(p) => p.encoded_len(),
            Rtcp::Fir(p) => p.encoded_len(),
            Rtcp::Nack(p) => p.encoded_len(),
            Rtcp::Remb(p) => p.encoded_len(),
            Rtcp::TransportCc(p) => p.encoded_len(),
            Rtcp::Unknown { bytes, .. } => bytes.len(),
        }
    }

    /// Writes the packet into `buf`, returning its length.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<usize, Error> {
        match self {
            Rtcp::SenderReport(p) => p.write_to(buf),
            Rtcp::ReceiverReport(p) => p.write_to(buf),
            Rtcp::Sdes(p) => p.write_to(buf),
            Rtcp::Bye(p) => p.write_to(buf),
            Rtcp::Pli(p) => p.write_to(buf),
            Rtcp::Fir(p) => p.write_to(buf),
            Rtcp::Nack(p) => p.write_to(buf),
            Rtcp::Remb(p) => p.write_to(buf),
            Rtcp::TransportCc(p) => p.write_to(buf),
            Rtcp::Unknown { bytes, .. } => {
                let out = out_buf(buf, bytes.len())?;
                out.copy_from_slice(bytes);
                Ok(bytes.len())
            }
        }
    }
}

/// Iterates the packets of a compound RTCP packet (RFC 3550 §6.1). After the first error it
/// yields nothing more: without a valid length the next packet cannot be found.
#[derive(Debug, Clone)]
pub struct RtcpIter<'a> {
    rest: &'a [u8],
}

impl<'a> RtcpIter<'a> {
    /// Iterates the packets in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        RtcpIter { rest: buf }
    }
}

impl<'a> Iterator for RtcpIter<'a> {
    type Item = Result<Rtcp<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match Rtcp::parse(self.rest) {
            Ok((packet, len)) => {
                self.rest = &self.rest[len..];
                Some(Ok(packet))
            }
            Err(e) => {
                self.rest = &[];
                Some(Err(e))
            }
        }
    }
}

impl core::iter::FusedIterator for RtcpIter<'_> {}

/// The common header fields (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub count: u8,
    pub pt: u8,
    /// Whole packet length, from the length field.
    pub len: usize,
}

/// Splits the first packet in `buf` into its header and its body without padding.
pub(crate) fn split(buf: &[u8]) -> Result<(Header, &[u8]), Error> {
    if buf.len() < 4 {
        return Err(Error::Truncated);
    }
    let version = buf[0] >> 6;
    if version != 2 {
        return Err(Error::BadVersion(version));
    }
    let len = (usize::from(u16::from_be_bytes([buf[2], buf[3]])) + 1) * 4;
    if len > buf.len() {
        return Err(Error::BadLength);
    }
    let mut end = len;
    if buf[0] & 0x20 != 0 {
        // The last octet counts padding octets, itself included.
        let pad = usize::from(buf[len - 1]);
        if pad == 0 || pad > len - 4 {
            return Err(Error::BadPadding);
        }
        end -= pad;
    }
    let header = Header {
        count: buf[0] & 0x1F,
        pt: buf[1],
        len,
    };
    Ok((header, &buf[4..end]))
}

/// Parses one whole packet of type `pt` (and feedback type `fmt`, if given) and returns its
/// count field and body, for the per-type `parse` functions.
pub(crate) fn body_of(packet: &[u8], pt: u8, fmt: Option<u8>) -> Result<(u8, &[u8]), Error> {
    let (h, body) = split(packet)?;
    if h.pt != pt || fmt.is_some_and(|f| f != h.count) {
        return Err(Error::Malformed("unexpected rtcp packet type"));
    }
    Ok((h.count, body))
}

/// The first `len` bytes of `buf`, or `BufferTooSmall`.
pub(crate) fn out_buf(buf: &mut [u8], len: usize) -> Result<&mut [u8], Error> {
    buf.get_mut(..len)
        .ok_or(Error::BufferTooSmall { needed: len })
}

/// Total packet length for a body of `body_len` bytes, padded to 32 bits.
pub(crate) fn padded_len(body_len: usize) -> usize {
    (4 + body_len).div_ceil(4) * 4
}

/// Writes the common header into `buf`, which is the whole packet (length a multiple of 4),
/// and the padding after a body of `body_len` bytes (RFC 3550 §6.4.1).
pub(crate) fn write_header(
    buf: &mut [u8],
    count: u8,
    pt: u8,
    body_len: usize,
) -> Result<(), Error> {
    let len = buf.len();
    if len > MAX_PACKET_LEN {
        return Err(Error::OutOfRange(
            "rtcp packet longer than the length field allows",
        ));
    }
    if count > 31 {
        return Err(Error::OutOfRange("rtcp count above 31"));
    }
    let pad = len - 4 - body_len;
    buf[0] = 0x80 | if pad > 0 { 0x20 } else { 0 } | count;
    buf[1] = pt;
    buf[2..4].copy_from_slice(&((len / 4 - 1) as u16).to_be_bytes());
    if pad > 0 {
        buf[len - pad..].fill(0);
        buf[len - 1] = pad as u8;
    }
    Ok(())
}

/// Reads the big-endian u32 at `at`, or `Truncated`.
pub(crate) fn u32_at(b: &[u8], at: usize) -> Result<u32, Error> {
    match b.get(at..at + 4) {
        Some(s) => Ok(crate::packet::read_u32(s, 0)),
        None => Err(Error::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ssrc;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn classifies_rtcp_and_rtp() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(is_rtcp(&[0x81, 205]));
        assert!(!is_rtcp(&[0x80, 96]));
        assert!(!is_rtcp(&[0x80, 0x80 | 111]));
        assert!(!is_rtcp(&[0x80]));
    }

    #[test]
    fn walks_a_compound_packet() {
        // RR (no blocks) + SDES with CNAME "ab" + PLI + APP (unknown).
        let buf = hex("80c9 0001 00000001 \
             81ca 0003 00000001 0102 6162 0000 0000 \
             81ce 0002 00000001 00000002 \
             80cc 0002 00000001 41424344");
        let packets: Vec<_> = RtcpIter::new(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(packets.len(), 4);
        assert!(matches!(packets[0], Rtcp::ReceiverReport(r) if r.reports.is_empty()));
        match packets[1] {
            Rtcp::Sdes(s) => {
                let c: Vec<_> = s.chunks.iter().collect();
                assert_eq!(
                    c,
                    vec![SdesChunk {
                        ssrc: Ssrc(1),
                        cname: b"ab"
                    }]
                );
            }
            ref p => panic!("{p:?}"),
        }
        assert_eq!(
            packets[2],
            Rtcp::Pli(Pli {
                sender_ssrc: Ssrc(1),
                media_ssrc: Ssrc(2)
            })
        );
        assert!(
            matches!(packets[3], Rtcp::Unknown { pt: 204, fmt: 0, bytes } if bytes.len() == 12)
        );
        // Writing every packet back reproduces the compound packet.
        let mut out = vec![0u8; buf.len()];
        let mut pos = 0;
        for p in &packets {
            assert_eq!(p.encoded_len(), p.write_to(&mut out[pos..]).unwrap());
            pos += p.encoded_len();
        }
        assert_eq!(out, buf);
    }

    #[test]
    fn stops_after_an_error() {
        let buf = hex("80c9 0001 00000001 80c9 0009 00000001 80c9 0001 00000001");
        let mut it = RtcpIter::new(&buf);
        assert!(it.next().unwrap().is_ok());
        assert_eq!(it.next().unwrap(), Err(Error::BadLength));
        assert!(it.next().is_none());
    }

    #[test]
    fn header_errors() {
        assert_eq!(split(&[0x80, 200, 0]).unwrap_err(), Error::Truncated);
        assert_eq!(split(&[0x40, 200, 0, 0]).unwrap_err(), Error::BadVersion(1));
        assert_eq!(
            split(&hex("a0c9 0001 00000000")).unwrap_err(),
            Error::BadPadding
        );
        assert_eq!(
            split(&hex("a0c9 0001 00000009")).unwrap_err(),
            Error::BadPadding
        );
        let padded = hex("a0c9 0001 00000004");
        let (_, body) = split(&padded).unwrap();
        assert!(body.is_empty());
    }
}
