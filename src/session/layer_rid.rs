//! The RTP stream id (RFC 8852) a relay writes into each packet of a simulcast layer it sends
//! on its own SSRC, so that the other node learns the layers as it does from a browser (see
//! [`crate::simulcast::LayerMap`]).
//!
//! A browser names a layer's SSRC in its first packets only; a relay names it in every one:
//! the other node may join late, lose the first packets, or see an SSRC change when the relay
//! starts again, and an element costs four bytes. The packet's own extensions are replaced,
//! not kept: they are the publisher's, under ids the relay's offer never mapped, so the other
//! node could not read them anyway, and one id of theirs could be the relay's rid id.

use rtp::RtpHeader;

/// Longest rid the one-byte element form carries (RFC 8285 §4.2), as the SDP parser bounds it.
const MAX_RID_LEN: usize = 16;
/// Largest id of the one-byte form (15 is reserved).
const MAX_ONE_BYTE_ID: u8 = 14;
/// The one-byte form's "defined by profile" value.
const ONE_BYTE_PROFILE: u16 = 0xBEDE;
/// Length of the RTP fixed header (RFC 3550 §5.1).
const FIXED_LEN: usize = 12;
/// The X bit of the first header octet.
const EXTENSION_BIT: u8 = 0x10;

/// One layer's rid and the extension ids it is written under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LayerRid {
    rid: [u8; MAX_RID_LEN],
    len: u8,
    /// The RTP stream id extension's id, for media packets.
    ext: u8,
    /// The repaired RTP stream id extension's id, for retransmissions.
    repaired_ext: Option<u8>,
}

impl LayerRid {
    /// `rid` under extension ids `ext` and `repaired_ext`; `None` unless the one-byte form
    /// carries them (ids 1 to 14, a rid of 1 to 16 bytes).
    pub(super) fn new(rid: &str, ext: u8, repaired_ext: Option<u8>) -> Option<LayerRid> {
        let one_byte = |id: u8| (1..=MAX_ONE_BYTE_ID).contains(&id);
        let fits = (1..=MAX_RID_LEN).contains(&rid.len());
        if !fits || !one_byte(ext) || !repaired_ext.is_none_or(one_byte) {
            return None;
        }
        let mut bytes = [0u8; MAX_RID_LEN];
        bytes[..rid.len()].copy_from_slice(rid.as_bytes());
        Some(LayerRid {
            rid: bytes,
            len: rid.len() as u8,
            ext,
            repaired_ext,
        })
    }

    fn rid(&self) -> &[u8] {
        &self.rid[..usize::from(self.len)]
    }

    /// Gives the media packet in `packet[..len]` the rid as its only header extension, in
    /// place; returns its new length.
    pub(super) fn write_media(&self, packet: &mut [u8], len: usize) -> Result<usize, rtp::Error> {
        with_only_element(packet, len, self.ext, self.rid())
    }

    /// Gives the retransmission (RFC 4588) in `packet[..len]` the rid, as the one it repairs,
    /// as its only header extension, in place; returns its new length.
    pub(super) fn write_repair(&self, packet: &mut [u8], len: usize) -> Result<usize, rtp::Error> {
        let ext = self.repaired_ext.ok_or(rtp::Error::OutOfRange(
            "no repaired rtp stream id extension",
        ))?;
        with_only_element(packet, len, ext, self.rid())
    }
}

/// Replaces the header extensions of the RTP packet in `packet[..len]` (none, or a block of
/// any profile) with a one-byte block (RFC 8285 §4.2) of element `id` = `data`, in place:
/// the payload (and any padding) moves to follow it. Returns the new length;
/// `BufferTooSmall` when `packet` cannot hold it.
fn with_only_element(
    packet: &mut [u8],
    len: usize,
    id: u8,
    data: &[u8],
) -> Result<usize, rtp::Error> {
    let payload_at =
        RtpHeader::parse(packet.get(..len).ok_or(rtp::Error::Truncated)?)?.payload_offset();
    let csrcs_end = FIXED_LEN + 4 * usize::from(packet[0] & 0x0F);
    // The element's header octet and data, zero-padded to whole words.
    let words = (1 + data.len()).div_ceil(4);
    let elements_at = csrcs_end + 4;
    let new_payload_at = elements_at + 4 * words;
    let new_len = len - payload_at + new_payload_at;
    if new_len > packet.len() {
        return Err(rtp::Error::BufferTooSmall { needed: new_len });
    }
    packet.copy_within(payload_at..len, new_payload_at);
    packet[0] |= EXTENSION_BIT;
    packet[csrcs_end..csrcs_end + 2].copy_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
    // At most five words: the data is at most 16 bytes.
    packet[csrcs_end + 2..elements_at].copy_from_slice(&(words as u16).to_be_bytes());
    packet[elements_at] = (id << 4) | (data.len() as u8 - 1);
    let data_at = elements_at + 1;
    packet[data_at..data_at + data.len()].copy_from_slice(data);
    packet[data_at + data.len()..new_payload_at].fill(0);
    Ok(new_len)
}

#[cfg(test)]
mod tests {
    use rtp::{ExtensionElement, Pt, RtpHeaderBuilder, Ssrc};

    use super::*;
    use crate::session::test_support::extension_elements;

    /// A packet with a CSRC, `extensions`, payload `frame` and 3 bytes of padding, in a
    /// buffer with room to spare.
    fn packet(extensions: &[ExtensionElement<'_>]) -> (Vec<u8>, usize) {
        let csrcs = [Ssrc(0xc5c5_c5c5)];
        let mut b = RtpHeaderBuilder::new(Pt::new(96), 7, 9000, Ssrc(0x1111));
        b.marker = true;
        b.csrcs = &csrcs;
        b.extensions = extensions;
        let mut p = vec![0u8; b.encoded_len()];
        b.write_to(&mut p).unwrap();
        p.extend_from_slice(b"frame");
        p[0] |= 0x20;
        p.extend_from_slice(&[0, 0, 3]);
        let len = p.len();
        p.resize(len + 64, 0xee);
        (p, len)
    }

    fn elements(packet: &[u8]) -> Vec<(u8, Vec<u8>)> {
        extension_elements(&RtpHeader::parse(packet).unwrap())
    }

    fn check_rest(packet: &[u8]) {
        let header = RtpHeader::parse(packet).unwrap();
        assert_eq!(header.csrcs().collect::<Vec<_>>(), [Ssrc(0xc5c5_c5c5)]);
        assert_eq!(header.payload(), b"frame");
        assert_eq!(header.padding_len(), 3);
        assert!(header.marker());
        assert_eq!((header.sequence_number(), header.timestamp()), (7, 9000));
    }

    #[test]
    fn a_layers_packet_carries_its_rid_as_its_only_extension() {
        let rid = LayerRid::new("mid-1", 10, Some(11)).unwrap();
        // Without extensions, with the publisher's (its own rid id among them), and with a
        // two-byte block.
        let others = [
            ExtensionElement {
                id: 3,
                data: &[1, 2],
            },
            ExtensionElement { id: 10, data: b"h" },
        ];
        let two_byte = [ExtensionElement {
            id: 200,
            data: &[9; 20],
        }];
        for extensions in [&[][..], &others[..], &two_byte[..]] {
            let (mut p, len) = packet(extensions);
            let n = rid.write_media(&mut p, len).unwrap();
            assert_eq!(elements(&p[..n]), [(10, b"mid-1".to_vec())]);
            check_rest(&p[..n]);
            // Writing it again changes nothing: a retransmission is the same bytes.
            let before = p[..n].to_vec();
            assert_eq!(rid.write_media(&mut p, n), Ok(n));
            assert_eq!(p[..n], before[..]);
            let n = rid.write_repair(&mut p, n).unwrap();
            assert_eq!(elements(&p[..n]), [(11, b"mid-1".to_vec())]);
            check_rest(&p[..n]);
        }
    }

    #[test]
    fn a_full_word_rid_and_a_buffer_too_small() {
        let rid = LayerRid::new("abc", 1, None).unwrap();
        let (mut p, len) = packet(&[]);
        let n = rid.write_media(&mut p, len).unwrap();
        // One word: the element's header octet and three bytes, no padding.
        assert_eq!(n, len + 8);
        assert_eq!(elements(&p[..n]), [(1, b"abc".to_vec())]);
        assert!(rid.write_repair(&mut p, n).is_err(), "no repaired id");
        let (mut p, len) = packet(&[]);
        assert_eq!(
            rid.write_media(&mut p[..len + 4], len),
            Err(rtp::Error::BufferTooSmall { needed: len + 8 })
        );
    }

    #[test]
    fn only_what_the_one_byte_form_carries() {
        assert!(LayerRid::new("", 10, None).is_none());
        assert!(LayerRid::new(&"x".repeat(17), 10, None).is_none());
        assert!(LayerRid::new("h", 15, None).is_none());
        assert!(LayerRid::new("h", 0, None).is_none());
        assert!(LayerRid::new("h", 10, Some(15)).is_none());
        assert!(LayerRid::new(&"x".repeat(16), 14, Some(1)).is_some());
    }
}
