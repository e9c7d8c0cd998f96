//! H.264 access units from FLV (length-prefixed NAL units) to RTP packets (RFC 6184,
//! packetization-mode 1): a NAL unit that fits is one packet (single NAL unit packet, §5.6),
//! a longer one is split in FU-A fragments (§5.8); the SPS and PPS of the sequence header go
//! before every IDR, so every keyframe is decodable on its own (a WebRTC player joins on the
//! keyframe the node cached); the marker bit is set on the last packet of an access unit.
//!
//! Packets are written into the packetizer's own buffer and lent to a callback: nothing is
//! allocated per frame or per packet (the stored SPS and PPS are copied only when they change).

use rtp::{is_keyframe, VideoCodec};

use super::flv::{nal_units, AvcConfig};

/// The longest RTP packet made: what browsers send, leaving room for the SRTP tag and the
/// header extensions players' packets get on the way out.
pub const RTP_MAX_PACKET: usize = 1200;
const RTP_HEADER: usize = 12;
const MAX_PAYLOAD: usize = RTP_MAX_PACKET - RTP_HEADER;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;
const NAL_FILLER: u8 = 12;
const FU_A: u8 = 28;

/// RTMP milliseconds (decoding time plus composition offset) to a 90 kHz RTP timestamp from a
/// random base. RTMP's 32-bit millisecond clock wraps where the RTP clock does (2^32 ms × 90
/// is a multiple of 2^32), so the mapping needs no state.
#[derive(Debug, Clone, Copy)]
pub struct RtpClock {
    /// The RTP timestamp of RTMP time 0.
    pub base: u32,
}

impl RtpClock {
    /// The RTP timestamp of a frame decoded at `dts_ms` and shown `composition_ms` later.
    pub fn rtp_time(&self, dts_ms: u32, composition_ms: i32) -> u32 {
        let pts = i64::from(dts_ms) + i64::from(composition_ms);
        // Truncation is the 2^32 wrap of the RTP clock.
        self.base.wrapping_add((pts * 90) as u32)
    }
}

/// What one access unit became.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// RTP packets written.
    pub packets: usize,
    /// It held an IDR picture (and so went out with SPS and PPS before it).
    pub idr: bool,
}

/// Why a frame could not be packetized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketizeError {
    /// A frame came before the sequence header said how to read it.
    #[error("H.264 frame before the AVC sequence header")]
    NoConfig,
}

/// One H.264 track's packetizer (see the module docs).
pub struct H264Packetizer {
    pt: u8,
    ssrc: u32,
    seq: u16,
    length_size: u8,
    sps: Vec<u8>,
    pps: Vec<u8>,
    buf: [u8; RTP_MAX_PACKET],
}

impl H264Packetizer {
    /// A packetizer sending payload type `pt` on `ssrc`, numbering from `first_seq`.
    pub fn new(pt: u8, ssrc: u32, first_seq: u16) -> H264Packetizer {
        H264Packetizer {
            pt,
            ssrc,
            seq: first_seq,
            length_size: 0,
            sps: Vec::new(),
            pps: Vec::new(),
            buf: [0; RTP_MAX_PACKET],
        }
    }

    /// Takes a sequence header's SPS, PPS and NAL length size.
    pub fn set_config(&mut self, config: &AvcConfig<'_>) {
        self.length_size = config.length_size;
        replace(&mut self.sps, config.sps);
        replace(&mut self.pps, config.pps);
    }

    /// The sequence number the next packet gets.
    pub fn next_seq(&self) -> u16 {
        self.seq
    }

    /// Packetizes one access unit (`nalus`, length-prefixed as the sequence header said) at RTP
    /// time `timestamp`; `emit` gets each packet and whether it is part of a keyframe (as
    /// `rtp::is_keyframe` tells, like for a WebRTC publisher's packets).
    pub fn packetize(
        &mut self,
        timestamp: u32,
        nalus: &[u8],
        mut emit: impl FnMut(&[u8], bool),
    ) -> Result<FrameInfo, PacketizeError> {
        if self.length_size == 0 {
            return Err(PacketizeError::NoConfig);
        }
        // First pass: in-band parameter sets replace the stored ones (and go out from there,
        // before the IDR), and the units to send are counted, to mark the last.
        let mut idr = false;
        let mut units = 0;
        for nal in nal_units(nalus, self.length_size) {
            match nal[0] & 0x1F {
                NAL_SPS => replace(&mut self.sps, nal),
                NAL_PPS => replace(&mut self.pps, nal),
                NAL_AUD | NAL_FILLER => {}
                kind => {
                    idr |= kind == NAL_IDR;
                    units += 1;
                }
            }
        }
        let mut info = FrameInfo { packets: 0, idr };
        if units == 0 {
            return Ok(info);
        }
        if idr {
            let sps = std::mem::take(&mut self.sps);
            let pps = std::mem::take(&mut self.pps);
            self.send_nal(timestamp, &sps, false, &mut emit, &mut info);
            self.send_nal(timestamp, &pps, false, &mut emit, &mut info);
            self.sps = sps;
            self.pps = pps;
        }
        let mut sent = 0;
        for nal in nal_units(nalus, self.length_size) {
            if matches!(nal[0] & 0x1F, NAL_SPS | NAL_PPS | NAL_AUD | NAL_FILLER) {
                continue;
            }
            sent += 1;
            self.send_nal(timestamp, nal, sent == units, &mut emit, &mut info);
        }
        Ok(info)
    }

    /// One NAL unit as a single packet or FU-A fragments; `last`: it ends the access unit.
    fn send_nal(
        &mut self,
        timestamp: u32,
        nal: &[u8],
        last: bool,
        emit: &mut impl FnMut(&[u8], bool),
        info: &mut FrameInfo,
    ) {
        if nal.is_empty() {
            return;
        }
        if nal.len() <= MAX_PAYLOAD {
            let len = self.write_header(timestamp, last) + nal.len();
            self.buf[RTP_HEADER..len].copy_from_slice(nal);
            self.emit(len, emit, info);
            return;
        }
        let indicator = (nal[0] & 0xE0) | FU_A;
        let kind = nal[0] & 0x1F;
        let mut rest = &nal[1..];
        let mut start = true;
        while !rest.is_empty() {
            let take = rest.len().min(MAX_PAYLOAD - 2);
            let end = take == rest.len();
            self.write_header(timestamp, last && end);
            self.buf[RTP_HEADER] = indicator;
            self.buf[RTP_HEADER + 1] =
                kind | if start { 0x80 } else { 0 } | if end { 0x40 } else { 0 };
            let len = RTP_HEADER + 2 + take;
            self.buf[RTP_HEADER + 2..len].copy_from_slice(&rest[..take]);
            self.emit(len, emit, info);
            rest = &rest[take..];
            start = false;
        }
    }

    fn write_header(&mut self, timestamp: u32, marker: bool) -> usize {
        let b = &mut self.buf;
        b[0] = 0x80;
        b[1] = self.pt | if marker { 0x80 } else { 0 };
        b[2..4].copy_from_slice(&self.seq.to_be_bytes());
        b[4..8].copy_from_slice(&timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        RTP_HEADER
    }

    fn emit(&self, len: usize, emit: &mut impl FnMut(&[u8], bool), info: &mut FrameInfo) {
        let packet = &self.buf[..len];
        emit(packet, is_keyframe(VideoCodec::H264, &packet[RTP_HEADER..]));
        info.packets += 1;
    }
}

/// Copies `from` into `to`, reusing its allocation (the packetizer's and the RTMP player's
/// parameter sets).
pub(super) fn replace(to: &mut Vec<u8>, from: &[u8]) {
    if to.as_slice() != from {
        to.clear();
        to.extend_from_slice(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 5] = [0x67, 0x42, 0xC0, 0x1E, 0xAA];
    const PPS: [u8; 4] = [0x68, 0xCE, 0x3C, 0x80];

    fn packetizer() -> H264Packetizer {
        let mut p = H264Packetizer::new(102, 0x1234_5678, 65534);
        p.set_config(&AvcConfig {
            length_size: 4,
            sps: &SPS,
            pps: &PPS,
        });
        p
    }

    fn frame(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
            .collect()
    }

    /// Packets of one frame: (payload, marker, seq, timestamp, keyframe).
    fn run(p: &mut H264Packetizer, ts: u32, data: &[u8]) -> Vec<(Vec<u8>, bool, u16, u32, bool)> {
        let mut out = Vec::new();
        p.packetize(ts, data, |packet, keyframe| {
            let h = rtp::RtpHeader::parse(packet).unwrap();
            assert_eq!(h.payload_type(), rtp::Pt::new(102));
            assert_eq!(h.ssrc().0, 0x1234_5678);
            assert!(packet.len() <= RTP_MAX_PACKET);
            out.push((
                h.payload().to_vec(),
                h.marker(),
                h.sequence_number(),
                h.timestamp(),
                keyframe,
            ));
        })
        .unwrap();
        out
    }

    #[test]
    fn sps_and_pps_go_before_every_idr_and_the_marker_ends_the_frame() {
        let mut p = packetizer();
        let aud = [0x09, 0xF0];
        let idr = [0x65, 0x88, 0x84];
        let packets = run(&mut p, 9000, &frame(&[&aud, &[0x06, 0x05], &idr]));
        let payloads: Vec<&[u8]> = packets.iter().map(|p| &p.0[..]).collect();
        assert_eq!(payloads, [&SPS[..], &PPS[..], &[0x06, 0x05][..], &idr[..]]);
        let markers: Vec<bool> = packets.iter().map(|p| p.1).collect();
        assert_eq!(markers, [false, false, false, true]);
        let seqs: Vec<u16> = packets.iter().map(|p| p.2).collect();
        assert_eq!(seqs, [65534, 65535, 0, 1]);
        assert!(packets.iter().all(|p| p.3 == 9000));
        // The SPS and the IDR mark the keyframe (as `rtp::is_keyframe` reads them).
        assert!(packets[0].4 && packets[3].4);
        // A delta frame: no parameter sets, one packet with the marker.
        let packets = run(&mut p, 12000, &frame(&[&[0x41, 0x9A]]));
        assert_eq!(packets.len(), 1);
        assert!(packets[0].1 && !packets[0].4);
        // An in-band SPS replaces the stored one and goes before the IDR, once.
        let new_sps = [0x67, 0x4D, 0x40, 0x1F];
        let packets = run(&mut p, 15000, &frame(&[&new_sps, &PPS, &idr]));
        let payloads: Vec<&[u8]> = packets.iter().map(|p| &p.0[..]).collect();
        assert_eq!(payloads, [&new_sps[..], &PPS[..], &idr[..]]);
    }

    #[test]
    fn long_nal_units_are_split_in_fu_a_fragments_that_reassemble() {
        let mut p = packetizer();
        let mut idr = vec![0x65];
        idr.extend((0..5000u32).map(|i| (i % 251) as u8));
        let packets = run(&mut p, 0, &frame(&[&idr]));
        // SPS, PPS, then ceil(4999 / 1186) = 5 fragments.
        assert_eq!(packets.len(), 2 + 5);
        let fragments = &packets[2..];
        let mut rebuilt = vec![(fragments[0].0[0] & 0xE0) | (fragments[0].0[1] & 0x1F)];
        for (i, (payload, marker, ..)) in fragments.iter().enumerate() {
            assert_eq!(payload[0] & 0x1F, FU_A);
            assert_eq!(payload[1] & 0x80 != 0, i == 0, "start bit");
            assert_eq!(payload[1] & 0x40 != 0, i == 4, "end bit");
            assert_eq!(*marker, i == 4);
            assert!(payload.len() <= MAX_PAYLOAD);
            rebuilt.extend_from_slice(&payload[2..]);
        }
        assert_eq!(rebuilt, idr);
        // The first fragment of an IDR is a keyframe packet; later ones are not.
        assert!(fragments[0].4 && !fragments[1].4);
        // A NAL unit of exactly the payload size is still one packet.
        let exact = vec![0x41; MAX_PAYLOAD];
        assert_eq!(run(&mut p, 0, &frame(&[&exact])).len(), 1);
    }

    #[test]
    fn frames_before_the_sequence_header_are_refused() {
        let mut p = H264Packetizer::new(102, 1, 0);
        let err = p.packetize(0, &frame(&[&[0x65, 1]]), |_, _| {});
        assert_eq!(err, Err(PacketizeError::NoConfig));
    }

    #[test]
    fn timestamps_are_90khz_from_presentation_time_and_wrap_with_rtmp() {
        let clock = RtpClock { base: 1000 };
        assert_eq!(clock.rtp_time(0, 0), 1000);
        assert_eq!(clock.rtp_time(33, 0), 1000 + 33 * 90);
        assert_eq!(clock.rtp_time(100, 40), 1000 + 140 * 90);
        assert_eq!(clock.rtp_time(100, -40), 1000 + 60 * 90);
        // The RTMP clock's wrap continues the RTP clock.
        let before = clock.rtp_time(u32::MAX, 0);
        let after = clock.rtp_time(0, 0);
        assert_eq!(after.wrapping_sub(before), 90);
    }
}
