//! H.264 and H.265 access units from FLV (length-prefixed NAL units) to RTP packets, RFC 6184
//! (packetization-mode 1) and RFC 7798: a NAL unit that fits is one packet (a single NAL unit
//! packet), a longer one is split in fragmentation units (H.264 FU-A, §5.8; H.265 FU, §4.4.3);
//! the parameter sets of the sequence header (H.264 SPS and PPS, H.265 VPS, SPS and PPS) go
//! before every IDR or IRAP picture, so every keyframe is decodable on its own (a WebRTC
//! player joins on the keyframe the node cached); the marker bit is set on the last packet of
//! an access unit. The two formats differ only in their NAL unit header (one byte or two) and
//! the type numbers, which [`NalCodec`] says.
//!
//! Packets are written into the packetizer's own buffer and lent to a callback: nothing is
//! allocated per frame or per packet (the stored parameter sets are copied only when they
//! change).

use rtp::{h265, is_keyframe, VideoCodec};

use super::flv::nal_units;

/// The longest RTP packet made: what browsers send, leaving room for the SRTP tag and the
/// header extensions players' packets get on the way out.
pub const RTP_MAX_PACKET: usize = 1200;
const RTP_HEADER: usize = 12;
const MAX_PAYLOAD: usize = RTP_MAX_PACKET - RTP_HEADER;

const H264_IDR: u8 = 5;
const H264_SPS: u8 = 7;
const H264_PPS: u8 = 8;
const H264_AUD: u8 = 9;
const H264_FILLER: u8 = 12;
const H264_FU_A: u8 = 28;
/// H.265 filler data (§7.4.2.2, Table 7-1).
const H265_FILLER: u8 = 38;

/// Which NAL unit syntax a packetizer reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalCodec {
    H264,
    H265,
}

/// What a NAL unit is to the packetizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NalRole {
    /// A parameter set, stored in this slot (H.264 SPS 0, PPS 1; H.265 VPS 0, SPS 1, PPS 2).
    ParameterSet(usize),
    /// Not sent: an access unit delimiter or filler (the marker bit delimits access units),
    /// or a type the standard leaves unspecified and the RTP payload format uses for its own
    /// packet forms (H.264 0 and 24 to 31, RFC 6184 §5.2; H.265 48 to 63, RFC 7798 §4.4): sent
    /// as a single NAL unit packet, a receiver would read it as an aggregation packet or a
    /// fragment, and no decoder takes it.
    Dropped,
    /// A slice of an IDR (H.264) or IRAP (H.265) picture.
    Keyframe,
    /// Anything else (other slices, SEI): sent as it is.
    Other,
}

impl NalCodec {
    pub(super) fn header_len(self) -> usize {
        match self {
            NalCodec::H264 => 1,
            NalCodec::H265 => 2,
        }
    }

    /// What `nal` (at least [`NalCodec::header_len`] bytes) is.
    pub(super) fn role(self, nal: &[u8]) -> NalRole {
        match self {
            NalCodec::H264 => match nal[0] & 0x1F {
                H264_SPS => NalRole::ParameterSet(0),
                H264_PPS => NalRole::ParameterSet(1),
                H264_AUD | H264_FILLER | 0 | 24..=31 => NalRole::Dropped,
                H264_IDR => NalRole::Keyframe,
                _ => NalRole::Other,
            },
            NalCodec::H265 => match h265::nal_type(nal[0]) {
                h265::NAL_VPS => NalRole::ParameterSet(0),
                h265::NAL_SPS => NalRole::ParameterSet(1),
                h265::NAL_PPS => NalRole::ParameterSet(2),
                h265::NAL_AUD | H265_FILLER | h265::NAL_AP..=63 => NalRole::Dropped,
                t if h265::is_irap(t) => NalRole::Keyframe,
                _ => NalRole::Other,
            },
        }
    }

    /// The fragmentation unit's payload header and FU header for fragments of `nal`, without
    /// the S and E bits.
    fn fu_headers(self, nal: &[u8]) -> ([u8; 2], u8) {
        match self {
            // FU indicator (F, NRI of the unit; type 28), FU header type.
            NalCodec::H264 => ([(nal[0] & 0xE0) | H264_FU_A, 0], nal[0] & 0x1F),
            // PayloadHdr: the unit's F, LayerId and TID with type 49; FU header type.
            NalCodec::H265 => (
                [(nal[0] & 0x81) | (h265::NAL_FU << 1), nal[1]],
                h265::nal_type(nal[0]),
            ),
        }
    }

    fn video_codec(self) -> VideoCodec {
        match self {
            NalCodec::H264 => VideoCodec::H264,
            NalCodec::H265 => VideoCodec::H265,
        }
    }
}

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
    #[error("{0} frame before its decoder configuration record (sequence header)")]
    NoConfig(&'static str),
}

/// One H.264 or H.265 track's packetizer (see the module docs).
pub struct NalPacketizer {
    codec: NalCodec,
    pt: u8,
    ssrc: u32,
    seq: u16,
    length_size: u8,
    /// The parameter sets, in the order they go before a keyframe.
    parameter_sets: [Vec<u8>; 3],
    buf: [u8; RTP_MAX_PACKET],
}

impl NalPacketizer {
    /// A packetizer of `codec` sending payload type `pt` on `ssrc`, numbering from `first_seq`.
    pub fn new(codec: NalCodec, pt: u8, ssrc: u32, first_seq: u16) -> NalPacketizer {
        NalPacketizer {
            codec,
            pt,
            ssrc,
            seq: first_seq,
            length_size: 0,
            parameter_sets: Default::default(),
            buf: [0; RTP_MAX_PACKET],
        }
    }

    /// The codec this packetizer writes.
    pub fn codec(&self) -> NalCodec {
        self.codec
    }

    /// Takes a sequence header's NAL length size and parameter sets (H.264: SPS, PPS; H.265:
    /// VPS, SPS, PPS).
    pub fn set_config(&mut self, length_size: u8, parameter_sets: &[&[u8]]) {
        self.length_size = length_size;
        for (slot, set) in self.parameter_sets.iter_mut().zip(parameter_sets) {
            replace(slot, set);
        }
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
            return Err(PacketizeError::NoConfig(match self.codec {
                NalCodec::H264 => "H.264",
                NalCodec::H265 => "H.265",
            }));
        }
        let header_len = self.codec.header_len();
        // First pass: in-band parameter sets replace the stored ones (and go out from there,
        // before the keyframe), and the units to send are counted, to mark the last.
        let mut idr = false;
        let mut units = 0;
        for nal in nal_units(nalus, self.length_size) {
            if nal.len() < header_len {
                continue;
            }
            match self.codec.role(nal) {
                NalRole::ParameterSet(slot) => replace(&mut self.parameter_sets[slot], nal),
                NalRole::Dropped => {}
                role => {
                    idr |= role == NalRole::Keyframe;
                    units += 1;
                }
            }
        }
        let mut info = FrameInfo { packets: 0, idr };
        if units == 0 {
            return Ok(info);
        }
        if idr {
            let sets = std::mem::take(&mut self.parameter_sets);
            for set in &sets {
                self.send_nal(timestamp, set, false, &mut emit, &mut info);
            }
            self.parameter_sets = sets;
        }
        let mut sent = 0;
        for nal in nal_units(nalus, self.length_size) {
            if nal.len() < header_len
                || matches!(
                    self.codec.role(nal),
                    NalRole::ParameterSet(_) | NalRole::Dropped
                )
            {
                continue;
            }
            sent += 1;
            self.send_nal(timestamp, nal, sent == units, &mut emit, &mut info);
        }
        Ok(info)
    }

    /// One NAL unit as a single packet or fragmentation units; `last`: it ends the access
    /// unit. An empty slot (H.264 has no third parameter set) sends nothing.
    fn send_nal(
        &mut self,
        timestamp: u32,
        nal: &[u8],
        last: bool,
        emit: &mut impl FnMut(&[u8], bool),
        info: &mut FrameInfo,
    ) {
        let header_len = self.codec.header_len();
        if nal.len() < header_len {
            return;
        }
        if nal.len() <= MAX_PAYLOAD {
            let len = self.write_header(timestamp, last) + nal.len();
            self.buf[RTP_HEADER..len].copy_from_slice(nal);
            self.emit(len, emit, info);
            return;
        }
        let (payload_header, kind) = self.codec.fu_headers(nal);
        let payload_header = &payload_header[..header_len];
        let fu_header_at = RTP_HEADER + header_len;
        let data_at = fu_header_at + 1;
        let mut rest = &nal[header_len..];
        let mut start = true;
        while !rest.is_empty() {
            let take = rest.len().min(RTP_MAX_PACKET - data_at);
            let end = take == rest.len();
            self.write_header(timestamp, last && end);
            self.buf[RTP_HEADER..fu_header_at].copy_from_slice(payload_header);
            self.buf[fu_header_at] =
                kind | if start { 0x80 } else { 0 } | if end { 0x40 } else { 0 };
            let len = data_at + take;
            self.buf[data_at..len].copy_from_slice(&rest[..take]);
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
        emit(
            packet,
            is_keyframe(self.codec.video_codec(), &packet[RTP_HEADER..]),
        );
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

    fn packetizer() -> NalPacketizer {
        let mut p = NalPacketizer::new(NalCodec::H264, 102, 0x1234_5678, 65534);
        p.set_config(4, &[&SPS, &PPS]);
        p
    }

    fn frame(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| [&(n.len() as u32).to_be_bytes()[..], n].concat())
            .collect()
    }

    /// Packets of one frame: (payload, marker, seq, timestamp, keyframe).
    fn run(p: &mut NalPacketizer, ts: u32, data: &[u8]) -> Vec<(Vec<u8>, bool, u16, u32, bool)> {
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
            assert_eq!(payload[0] & 0x1F, H264_FU_A);
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
    fn h265_parameter_sets_go_before_every_irap_and_long_units_become_fus() {
        // x265's 320x240 VPS, SPS and PPS heads (their bodies do not matter here).
        let vps = [0x40, 0x01, 0x0C, 0x01, 0xFF];
        let sps = [0x42, 0x01, 0x01, 0x04, 0x08];
        let pps = [0x44, 0x01, 0xC0, 0x73];
        let mut p = NalPacketizer::new(NalCodec::H265, 102, 0x1234_5678, 7);
        p.set_config(4, &[&vps, &sps, &pps]);
        let aud = [0x46, 0x01, 0x50];
        let prefix_sei = [0x4E, 0x01, 0x05];
        // IDR_W_RADL (19), TID 1, longer than a packet.
        let mut idr = vec![0x26, 0x01];
        idr.extend((0..3000u32).map(|i| (i % 253) as u8));
        let packets = run(&mut p, 3000, &frame(&[&aud, &prefix_sei, &idr]));
        // VPS, SPS, PPS, SEI, then ceil(2998 / 1185) = 3 fragments.
        assert_eq!(packets.len(), 4 + 3);
        let payloads: Vec<&[u8]> = packets[..4].iter().map(|p| &p.0[..]).collect();
        assert_eq!(payloads, [&vps[..], &sps[..], &pps[..], &prefix_sei[..]]);
        let fragments = &packets[4..];
        let mut rebuilt = vec![(fragments[0].0[0] & 0x81) | (fragments[0].0[2] & 0x3F) << 1];
        rebuilt.push(fragments[0].0[1]);
        for (i, (payload, marker, ..)) in fragments.iter().enumerate() {
            assert_eq!(rtp::h265::nal_type(payload[0]), rtp::h265::NAL_FU);
            assert_eq!(payload[1], 0x01, "LayerId and TID kept");
            assert_eq!(payload[2] & 0x80 != 0, i == 0, "start bit");
            assert_eq!(payload[2] & 0x40 != 0, i == 2, "end bit");
            assert_eq!(*marker, i == 2);
            assert!(payload.len() <= MAX_PAYLOAD);
            rebuilt.extend_from_slice(&payload[3..]);
        }
        assert_eq!(rebuilt, idr);
        // The VPS and SPS, and the IRAP's first fragment, are keyframe packets.
        let keyframe: Vec<bool> = packets.iter().map(|p| p.4).collect();
        assert_eq!(keyframe, [true, true, false, false, true, false, false]);
        // A TRAIL_R picture: no parameter sets, one packet with the marker, not a keyframe.
        let packets = run(&mut p, 6000, &frame(&[&[0x02, 0x01, 0xD0]]));
        assert_eq!(packets.len(), 1);
        assert!(packets[0].1 && !packets[0].4);
        assert_eq!(packets[0].2, 7 + 7);
    }

    #[test]
    fn units_of_the_rtp_packet_forms_types_are_not_sent_as_single_nal_unit_packets() {
        // H.264 0 and 24 to 31 (STAP-A 24, FU-A 28, ...), beside a slice that goes.
        let mut p = packetizer();
        let slice = [0x41, 0x9A];
        let units: [&[u8]; 4] = [
            &[0x00, 1],
            &[0x78, 0, 2, 0x41, 0x9A],
            &[0x7C, 0x85, 1],
            &slice,
        ];
        let packets = run(&mut p, 0, &frame(&units));
        let payloads: Vec<&[u8]> = packets.iter().map(|p| &p.0[..]).collect();
        assert_eq!(payloads, [&slice[..]]);
        // H.265 48 (AP), 49 (FU), 63, beside a TRAIL_R slice that goes.
        let mut p = NalPacketizer::new(NalCodec::H265, 102, 0x1234_5678, 0);
        p.set_config(
            4,
            &[
                &[0x40, 0x01, 0x0C],
                &[0x42, 0x01, 0x01],
                &[0x44, 0x01, 0xC0],
            ],
        );
        let trail = [0x02, 0x01, 0xD0];
        let units: [&[u8]; 4] = [
            &[0x60, 0x01, 0, 1, 0],
            &[0x62, 0x01, 0x93],
            &[0x7E, 0x01],
            &trail,
        ];
        let packets = run(&mut p, 0, &frame(&units));
        let payloads: Vec<&[u8]> = packets.iter().map(|p| &p.0[..]).collect();
        assert_eq!(payloads, [&trail[..]]);
    }

    #[test]
    fn frames_before_the_sequence_header_are_refused() {
        let mut p = NalPacketizer::new(NalCodec::H264, 102, 1, 0);
        let err = p.packetize(0, &frame(&[&[0x65, 1]]), |_, _| {});
        assert_eq!(err, Err(PacketizeError::NoConfig("H.264")));
        let mut p = NalPacketizer::new(NalCodec::H265, 49, 1, 0);
        let err = p.packetize(0, &frame(&[&[0x26, 1, 0xAF]]), |_, _| {});
        assert_eq!(err, Err(PacketizeError::NoConfig("H.265")));
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
