//! The RTP retransmission payload format (RFC 4588) both ways, in the caller's buffers and
//! without allocating: sans-IO, like the session that uses it.
//!
//! Players: a packet a player reported lost goes out again on the player's own retransmission
//! stream ([`RtxSender`]): its own SSRC, payload type and sequence numbers, the original's
//! sequence number (OSN) in front of the payload. Sent on the media SSRC instead, it would have
//! to reuse the number and SRTP index it first went out with.
//!
//! Publishers: a browser that negotiated rtx sends its retransmissions, and bandwidth probes,
//! on its retransmission stream. [`restore_publisher_rtx`] turns one back into the media
//! packet it carries, in the receive buffer, so the core forwards it like any other media
//! packet; what carries no media, or media already received, is refused with an [`RtxError`].

use rtp::srtp::SrtpContext;
use rtp::{Pt, RtpHeader, Ssrc};

use crate::control::PublishedTrack;
use crate::sdp::MediaKind;

/// Bytes the original sequence number takes in front of the payload (RFC 4588 §4).
const OSN_LEN: usize = 2;
/// The P bit of the first header octet (RFC 3550 §5.1).
const PADDING_BIT: u8 = 0x20;

/// Why a publisher's RTX packet was not turned back into media. The core drops the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtxError {
    /// Not a valid RTP packet.
    #[error("malformed RTX packet: {0}")]
    Malformed(rtp::Error),
    /// No original packet inside (two bytes of payload or less): the padding-only packets
    /// browsers send on the retransmission stream to probe bandwidth.
    #[error("RTX packet without media (padding probe)")]
    Empty,
    /// The packet it carries was received already, or is older than the SRTP replay window.
    /// Browsers also resend recent packets as RTX to probe bandwidth.
    #[error("RTX packet repeats a packet already received")]
    AlreadyReceived,
    /// No FID group said which media SSRC it repairs, and no media arrived yet to learn it.
    #[error("RTX packet for a track whose media SSRC is not known yet")]
    UnknownMediaSsrc,
}

impl RtxError {
    /// Whether the packet was bad input, rather than one dropped in the normal course (probes,
    /// repeats).
    pub fn is_malformed(&self) -> bool {
        matches!(self, RtxError::Malformed(_))
    }
}

/// A player's retransmission stream: packets it NACKs go out again on it.
#[derive(Debug, Clone)]
pub struct RtxSender {
    ssrc: Ssrc,
    pt: Pt,
    /// The sequence number of the next RTX packet: its own space, random start (RFC 3550 §5.1).
    next_seq: u16,
}

impl RtxSender {
    /// The stream with SSRC `ssrc` and payload type `pt` as announced to the player, numbering
    /// its packets from `first_seq` (pass a random value).
    pub fn new(ssrc: Ssrc, pt: Pt, first_seq: u16) -> Self {
        RtxSender {
            ssrc,
            pt,
            next_seq: first_seq,
        }
    }

    /// The stream's SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Writes `original` (plaintext RTP) into `out` as an RTX packet that repairs the packet
    /// the player knows as `osn`, sent with `timestamp`: header (marker, CSRCs, extensions)
    /// kept, SSRC, payload type and sequence number this stream's, payload the OSN then the
    /// original payload. The original's padding is left out, P bit cleared: the padding
    /// count would otherwise have to travel after the payload it no longer ends. Returns
    /// the plaintext length; `out` needs room for the SRTP tag after it too.
    pub fn write(
        &mut self,
        original: &[u8],
        osn: u16,
        timestamp: u32,
        out: &mut [u8],
    ) -> Result<usize, rtp::Error> {
        let header = RtpHeader::parse(original)?;
        let at = header.payload_offset();
        let payload = header.payload();
        let len = at + OSN_LEN + payload.len();
        let out = out
            .get_mut(..len)
            .ok_or(rtp::Error::BufferTooSmall { needed: len })?;
        out[..at].copy_from_slice(&original[..at]);
        out[at..at + OSN_LEN].copy_from_slice(&osn.to_be_bytes());
        out[at + OSN_LEN..].copy_from_slice(payload);
        out[0] &= !PADDING_BIT;
        rtp::set_ssrc(out, self.ssrc)?;
        rtp::set_payload_type(out, self.pt)?;
        rtp::set_sequence_number(out, self.next_seq)?;
        rtp::set_timestamp(out, timestamp)?;
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(len)
    }
}

/// If `packet` (plaintext RTP from a publisher) is on the retransmission payload type of one
/// of its `tracks`, turns it back into the media packet it carries, in place, and returns
/// its length; any other packet is left alone and its length returned.
///
/// The media SSRC is the FID group's when the packet comes from the group's RTX SSRC, else
/// `media_ssrc(kind)`: the SSRC the track's media arrived with (0 if none did). The packet it
/// carries goes through the media SSRC's SRTP replay check in `srtp` (the receiving context):
/// a packet forwarded once must not be forwarded again.
pub fn restore_publisher_rtx(
    tracks: &[PublishedTrack],
    mut media_ssrc: impl FnMut(MediaKind, &RtpHeader<'_>) -> u32,
    srtp: &mut SrtpContext,
    packet: &mut [u8],
) -> Result<usize, RtxError> {
    let len = packet.len();
    let Some(pt) = packet.get(1).map(|b| Pt::new(*b)) else {
        return Ok(len);
    };
    let Some(track) = tracks.iter().find(|t| t.rtx_pt == Some(pt.value())) else {
        return Ok(len);
    };
    let header = RtpHeader::parse(packet).map_err(RtxError::Malformed)?;
    let ssrc = match track.rtx_ssrcs {
        Some((media, rtx)) if rtx == header.ssrc().0 => media,
        _ => media_ssrc(track.kind, &header),
    };
    if ssrc == 0 {
        return Err(RtxError::UnknownMediaSsrc);
    }
    let osn = original_sequence(&header)?;
    srtp.accept_repaired(Ssrc(ssrc), osn)
        .map_err(|_| RtxError::AlreadyReceived)?;
    to_media(packet, Pt::new(track.pt), Ssrc(ssrc))
}

/// The OSN of an RTX packet, or [`RtxError::Empty`] when it carries no original payload.
fn original_sequence(header: &RtpHeader<'_>) -> Result<u16, RtxError> {
    match header.payload() {
        &[high, low, _, ..] => Ok(u16::from_be_bytes([high, low])),
        _ => Err(RtxError::Empty),
    }
}

/// Turns the RTX packet in `packet` into the media packet of `ssrc` and `pt` it carries, in
/// place: the payload after the OSN moves two bytes to the left, the OSN becomes the
/// sequence number; padding is dropped (P bit cleared). Returns the media packet's length.
pub fn to_media(packet: &mut [u8], pt: Pt, ssrc: Ssrc) -> Result<usize, RtxError> {
    let header = RtpHeader::parse(packet).map_err(RtxError::Malformed)?;
    let osn = original_sequence(&header)?;
    let at = header.payload_offset();
    let end = at + header.payload_len();
    packet.copy_within(at + OSN_LEN..end, at);
    let len = end - OSN_LEN;
    let media = &mut packet[..len];
    media[0] &= !PADDING_BIT;
    // The header was parsed above, so these cannot fail; errors are still not panics.
    rtp::set_payload_type(media, pt).map_err(RtxError::Malformed)?;
    rtp::set_ssrc(media, ssrc).map_err(RtxError::Malformed)?;
    rtp::set_sequence_number(media, osn).map_err(RtxError::Malformed)?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use rtp::srtp::SrtpProfile;
    use rtp::{ExtensionElement, RtpHeaderBuilder};

    use super::*;

    const MEDIA_PT: u8 = 96;
    const RTX_PT: u8 = 97;

    /// A media packet with a CSRC, an extension, the marker bit and `padding` bytes of padding.
    fn media(seq: u16, payload: &[u8], padding: u8) -> Vec<u8> {
        let csrcs = [Ssrc(0xc5c5_c5c5)];
        let ext = [ExtensionElement {
            id: 3,
            data: &[0xab, 0xcd],
        }];
        let mut b = RtpHeaderBuilder::new(Pt::new(MEDIA_PT), seq, 90_000, Ssrc(0x1111));
        b.marker = true;
        b.csrcs = &csrcs;
        b.extensions = &ext;
        let mut p = vec![0u8; b.encoded_len()];
        b.write_to(&mut p).unwrap();
        p.extend_from_slice(payload);
        if padding > 0 {
            p[0] |= PADDING_BIT;
            p.extend(std::iter::repeat_n(0, usize::from(padding) - 1));
            p.push(padding);
        }
        p
    }

    fn track(fid: Option<(u32, u32)>) -> PublishedTrack {
        PublishedTrack {
            kind: MediaKind::Video,
            pt: MEDIA_PT,
            clock_rate: 90_000,
            codec: "VP8".into(),
            rtx_pt: Some(RTX_PT),
            rtx_ssrcs: fid,
            transport_cc: None,
            simulcast: None,
        }
    }

    fn srtp() -> SrtpContext {
        SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[1; 16], &[2; 12]).unwrap()
    }

    #[test]
    fn an_rtx_packet_carries_the_osn_and_the_payload_under_its_own_numbers() {
        let mut sender = RtxSender::new(Ssrc(0x2222), Pt::new(RTX_PT), 65_535);
        let original = media(500, b"frame data", 3);
        let mut out = [0u8; 200];
        let n = sender.write(&original, 0x1234, 777_000, &mut out).unwrap();
        let rtx = RtpHeader::parse(&out[..n]).unwrap();
        assert_eq!(rtx.ssrc(), Ssrc(0x2222));
        assert_eq!(rtx.payload_type(), Pt::new(RTX_PT));
        assert_eq!(rtx.sequence_number(), 65_535);
        assert_eq!(rtx.timestamp(), 777_000);
        assert!(rtx.marker());
        assert!(!rtx.has_padding(), "the padding stays behind");
        assert_eq!(rtx.csrcs().collect::<Vec<_>>(), [Ssrc(0xc5c5_c5c5)]);
        assert_eq!(rtx.extensions().unwrap().get(3), Some(&[0xab, 0xcd][..]));
        assert_eq!(rtx.payload(), b"\x12\x34frame data");
        // The next one follows on, across the wrap.
        let n = sender.write(&original, 0x1235, 777_000, &mut out).unwrap();
        assert_eq!(RtpHeader::parse(&out[..n]).unwrap().sequence_number(), 0);
        // Too small a buffer, or not RTP: nothing written, no number used.
        assert_eq!(
            sender.write(&original, 1, 1, &mut out[..20]),
            Err(rtp::Error::BufferTooSmall { needed: n })
        );
        assert!(sender.write(&[0x80; 5], 1, 1, &mut out).is_err());
        let n = sender.write(&original, 0x1236, 777_000, &mut out).unwrap();
        assert_eq!(RtpHeader::parse(&out[..n]).unwrap().sequence_number(), 1);
    }

    #[test]
    fn an_rtx_packet_decrypts_with_the_receivers_context() {
        let (mut tx, mut rx) = (srtp(), srtp());
        let mut buf = [0u8; 1500];
        // The media stream is far along; the retransmission stream starts on its own index.
        for seq in 0..3u16 {
            let p = media(40_000 + seq, b"media", 0);
            buf[..p.len()].copy_from_slice(&p);
            let n = tx.protect_rtp(&mut buf, p.len()).unwrap();
            rx.unprotect_rtp(&mut buf[..n]).unwrap();
        }
        let mut sender = RtxSender::new(Ssrc(0x2222), Pt::new(RTX_PT), 9);
        let original = media(40_001, b"repaired", 0);
        let n = sender.write(&original, 40_001, 90_000, &mut buf).unwrap();
        let sealed = tx.protect_rtp(&mut buf, n).unwrap();
        let plain = rx.unprotect_rtp(&mut buf[..sealed]).unwrap();
        let rtx = RtpHeader::parse(&buf[..plain]).unwrap();
        assert_eq!((rtx.ssrc(), rtx.sequence_number()), (Ssrc(0x2222), 9));
        assert_eq!(rtx.payload(), b"\x9c\x41repaired");
        // And back: the receiver restores the packet it repairs, byte for byte.
        let len = to_media(&mut buf[..plain], Pt::new(MEDIA_PT), Ssrc(0x1111)).unwrap();
        assert_eq!(&buf[..len], original.as_slice());
    }

    #[test]
    fn a_publishers_rtx_packet_becomes_the_media_packet_in_place() {
        let original = media(7, b"payload!", 0);
        let mut sender = RtxSender::new(Ssrc(0x2222), Pt::new(RTX_PT), 100);
        let mut buf = [0u8; 300];
        // With padding on the RTX packet itself, as a sender may add.
        let n = sender.write(&original, 7, 90_000, &mut buf).unwrap();
        buf[0] |= PADDING_BIT;
        buf[n..n + 4].copy_from_slice(&[0, 0, 0, 4]);
        let mut rx = srtp();
        let tracks = [track(Some((0x1111, 0x2222)))];
        let len = restore_publisher_rtx(
            &tracks,
            |_, _: &RtpHeader<'_>| 0,
            &mut rx,
            &mut buf[..n + 4],
        )
        .unwrap();
        assert_eq!(&buf[..len], original.as_slice());
        // The same packet again repeats one received.
        let n = sender.write(&original, 7, 90_000, &mut buf).unwrap();
        assert_eq!(
            restore_publisher_rtx(&tracks, |_, _: &RtpHeader<'_>| 0, &mut rx, &mut buf[..n]),
            Err(RtxError::AlreadyReceived)
        );
        // Without a FID group the media SSRC is the one learned from media.
        let tracks = [track(None)];
        let n = sender
            .write(&media(8, b"x", 0), 8, 90_000, &mut buf)
            .unwrap();
        assert_eq!(
            restore_publisher_rtx(&tracks, |_, _: &RtpHeader<'_>| 0, &mut rx, &mut buf[..n]),
            Err(RtxError::UnknownMediaSsrc)
        );
        let learned = |kind, _: &RtpHeader<'_>| if kind == MediaKind::Video { 0x1111 } else { 0 };
        let len = restore_publisher_rtx(&tracks, learned, &mut rx, &mut buf[..n]).unwrap();
        assert_eq!(&buf[..len], media(8, b"x", 0).as_slice());
        // A media packet passes untouched.
        let mut plain = media(9, b"media", 2);
        let before = plain.clone();
        assert_eq!(
            restore_publisher_rtx(&tracks, learned, &mut rx, &mut plain),
            Ok(before.len())
        );
        assert_eq!(plain, before);
    }

    #[test]
    fn padding_probes_are_empty_and_malformed_rtx_is_an_error() {
        let tracks = [track(Some((0x1111, 0x2222)))];
        let mut rx = srtp();
        let restore = |rx: &mut SrtpContext, mut p: Vec<u8>| {
            p[1] = (p[1] & 0x80) | RTX_PT;
            p[8..12].copy_from_slice(&0x2222u32.to_be_bytes());
            restore_publisher_rtx(&tracks, |_, _: &RtpHeader<'_>| 0, rx, &mut p)
        };
        // Padding only (Chromium's probes), or an OSN with nothing after it.
        for (payload, padding) in [(&b""[..], 200), (&b"\x00\x07"[..], 0), (b"\x00", 0)] {
            assert_eq!(
                restore(&mut rx, media(1, payload, padding)),
                Err(RtxError::Empty),
                "{payload:?} {padding}"
            );
        }
        // Padding longer than the packet, a truncated extension.
        let mut bad = media(1, b"\x00\x07abc", 0);
        *bad.last_mut().unwrap() = 200;
        bad[0] |= PADDING_BIT;
        assert_eq!(
            restore(&mut rx, bad),
            Err(RtxError::Malformed(rtp::Error::BadPadding))
        );
        let truncated = media(1, b"", 0)[..18].to_vec();
        let err = restore(&mut rx, truncated).unwrap_err();
        assert!(err.is_malformed(), "{err:?}");
        assert!(!RtxError::Empty.is_malformed());
        // None of these was taken for a packet received.
        assert!(rx.roc(Ssrc(0x1111)).is_none());
    }

    #[test]
    fn the_fuzz_body_runs_on_packets_and_garbage() {
        let packets = [
            media(1, b"abc", 0),
            media(2, b"", 5),
            media(3, b"\x00\x07xyz", 2),
            vec![0x80; 12],
            vec![0x90, 0x61, 0, 0],
            Vec::new(),
        ];
        for p in &packets {
            crate::fuzzing::fuzz_rtx(p);
        }
        // Short byte strings that start like RTP, CSRC counts and X/P bits included.
        for i in 0..4000u32 {
            let bytes: Vec<u8> = (0..i % 48)
                .map(|k| (i.wrapping_mul(0x9e37_79b9) >> (k % 25)) as u8)
                .collect();
            let mut bytes = bytes;
            if let Some(first) = bytes.first_mut() {
                *first = 0x80 | (*first & 0x3f);
            }
            crate::fuzzing::fuzz_rtx(&bytes);
        }
    }
}
