//! Entry points for the fuzz targets in `fuzz/`: each target is a one-line call to one of
//! these. They panic only when an invariant of the crate is broken.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::rtcp::{PacketStatus, Rtcp, RtcpIter, TransportCc, TransportCcBuilder};
use crate::srtp::{SrtpContext, SrtpProfile};
use crate::twcc::{set_transport_seq, transport_seq, write_with_transport_seq, TwccRecorder};
use crate::{is_keyframe, keyframe_size, RtpHeader, RtpRewriter, Ssrc, VideoCodec};

/// Parses `data` as an RTP packet and exercises every accessor, the keyframe detectors (and sizes)
/// of every codec and an in-place rewrite. An H.265 SPS parsed on its own must keep to its bounds.
pub fn fuzz_rtp_header(data: &[u8]) {
    if let Ok(h) = RtpHeader::parse(data) {
        assert!(h.payload_offset() + h.payload_len() <= data.len());
        let _ = (
            h.marker(),
            h.payload_type(),
            h.sequence_number(),
            h.timestamp(),
            h.ssrc(),
        );
        let _ = h.csrcs().count();
        if let Some(ext) = h.extensions() {
            for e in ext.iter() {
                let _ = ext.get(e.id);
            }
        }
        for codec in [
            VideoCodec::Vp8,
            VideoCodec::Vp9,
            VideoCodec::H264,
            VideoCodec::Av1,
            VideoCodec::H265,
        ] {
            let _ = is_keyframe(codec, h.payload());
            let _ = keyframe_size(codec, h.payload());
        }
        if let Some(sps) = crate::H265Sps::parse(h.payload()) {
            assert!((1..=65535).contains(&sps.width) && (1..=65535).contains(&sps.height));
            assert!(sps.chroma_format_idc <= 3);
            assert!(sps.bit_depth_luma_minus8 <= 8 && sps.bit_depth_chroma_minus8 <= 8);
        }
        for id in [1, 2, 14, 15, 200] {
            check_transport_seq(data, &h, id);
        }
    }
    let mut copy = data.to_vec();
    let mut rw = RtpRewriter::new(crate::Ssrc(1), crate::Pt::new(96), 1, 1);
    let _ = rw.rewrite(&mut copy);
}

/// Walks `data` as a compound RTCP packet; every packet that parses must write back to bytes
/// that parse to the same value.
pub fn fuzz_rtcp(data: &[u8]) {
    let _ = crate::rtcp::is_rtcp(data);
    for packet in RtcpIter::new(data) {
        let Ok(packet) = packet else { break };
        let mut out = vec![0u8; packet.encoded_len()];
        let Ok(n) = packet.write_to(&mut out) else {
            continue;
        };
        assert_eq!(n, out.len());
        let (again, len) = Rtcp::parse(&out).expect("written rtcp parses");
        assert_eq!(len, n);
        let mut out2 = vec![0u8; again.encoded_len()];
        again.write_to(&mut out2).expect("rewrite succeeds");
        assert_eq!(out, out2, "write is stable across a round trip");
        if let Rtcp::Nack(nack) = packet {
            let _ = nack.lost().count();
        }
        if let Rtcp::Sdes(sdes) = packet {
            let _ = sdes.chunks.iter().count();
        }
        if let Rtcp::TransportCc(twcc) = packet {
            check_twcc_round_trip(&twcc);
        }
    }
}

/// Decodes `data` as transport-cc feedback, both as compound RTCP and (so that every input
/// reaches the chunk decoder) as a feedback body after the RTCP header; every valid decode
/// must re-encode to the same statuses. Then drives a [`TwccRecorder`] with operations read
/// from `data` and checks the feedback it writes against the arrivals it was given.
pub fn fuzz_twcc_feedback(data: &[u8]) {
    for packet in RtcpIter::new(data) {
        match packet {
            Ok(Rtcp::TransportCc(twcc)) => check_twcc_round_trip(&twcc),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    if let Ok(twcc) = TransportCc::from_body(data) {
        check_twcc_round_trip(&twcc);
    }
    fuzz_twcc_recorder(data);
}

/// A decodable feedback packet, written again by the builder, decodes to the same statuses.
fn check_twcc_round_trip(twcc: &TransportCc<'_>) {
    let Ok(packets) = twcc.packets() else { return };
    assert_eq!(packets.len(), usize::from(twcc.status_count));
    if twcc.status_count == 0 {
        return;
    }
    let mut b = TransportCcBuilder::new();
    // The largest RTCP packet holds 65,535 statuses with 2-byte deltas.
    b.start(
        twcc.base_seq,
        twcc.reference_time_us(),
        twcc.fb_count,
        usize::MAX,
    );
    let mut at = twcc.reference_time_us();
    for (seq, status) in packets.clone() {
        let arrival = match status {
            PacketStatus::NotReceived => None,
            PacketStatus::Received { delta_us } => {
                at += delta_us;
                Some(at)
            }
        };
        let pushed = b.push(seq, arrival).expect("decoded statuses are in order");
        assert!(pushed, "a decoded feedback packet fits the largest one");
    }
    let mut out = vec![0u8; b.encoded_len()];
    let n = b
        .write_to(twcc.sender_ssrc, twcc.media_ssrc, &mut out)
        .expect("a non-empty feedback packet writes");
    let again = TransportCc::parse(&out[..n]).expect("written feedback parses");
    assert_eq!(
        (again.sender_ssrc, again.media_ssrc, again.base_seq),
        (twcc.sender_ssrc, twcc.media_ssrc, twcc.base_seq)
    );
    assert_eq!(
        (again.status_count, again.reference_time, again.fb_count),
        (twcc.status_count, twcc.reference_time, twcc.fb_count)
    );
    let decoded = again.packets().expect("written feedback decodes");
    assert!(decoded.eq(packets), "statuses survive a round trip");
}

/// Operations of 3 bytes each on a recorder: packets (the next sequence numbers or a jump)
/// after 0 to 12.75 ms, time passing, polls with buffers of 28 to 1303 bytes, and
/// `poll_timeout` against `poll_feedback`. Every reported arrival must be one that was
/// given for that sequence number, to a delta unit's rounding.
fn fuzz_twcc_recorder(data: &[u8]) {
    // Any origin does: the recorder only measures from its first packet.
    let origin = Instant::now();
    let mut now = origin;
    let mut first = None;
    let mut rec = TwccRecorder::new();
    let mut seq = 0u16;
    let mut given: HashMap<u16, Vec<i64>> = HashMap::new();
    let mut fb_count = None;
    let mut buf = [0u8; 1303];
    for op in data.chunks_exact(3) {
        let (a, b) = (op[1], op[2]);
        match op[0] % 8 {
            0..=4 => {
                seq = match op[0] % 8 {
                    // A step of -128..=127 (mostly forward), or a jump anywhere.
                    4 => u16::from_be_bytes([a, b]),
                    _ => seq.wrapping_add(a as i8 as u16),
                };
                now += Duration::from_micros(u64::from(b) * 50);
                let zero = *first.get_or_insert(now);
                rec.on_packet(now, seq);
                let at = (now - zero).as_micros() as i64;
                given.entry(seq).or_default().push(at);
            }
            5 => now += Duration::from_millis(u64::from(a) * 10 + u64::from(b)),
            6 => {
                let out = &mut buf[..28 + 5 * usize::from(a)];
                for _ in 0..=4096 {
                    let Some(n) = rec
                        .poll_feedback(now, Ssrc(1), Ssrc(2), out)
                        .expect("feedback is written into 28 bytes and more")
                    else {
                        break;
                    };
                    let twcc = TransportCc::parse(&out[..n]).expect("feedback parses");
                    if let Some(prev) = fb_count {
                        assert_eq!(twcc.fb_count, u8::wrapping_add(prev, 1));
                    }
                    fb_count = Some(twcc.fb_count);
                    check_reported(&twcc, &given);
                }
            }
            _ => {
                if let Some(due) = rec.poll_timeout() {
                    if due > now {
                        let out = &mut buf[..];
                        let none = rec.poll_feedback(now, Ssrc(1), Ssrc(2), out);
                        assert_eq!(none, Ok(None), "no feedback before poll_timeout");
                    }
                }
            }
        }
    }
}

/// Each received status of `twcc` is an arrival that was given for its sequence number.
fn check_reported(twcc: &TransportCc<'_>, given: &HashMap<u16, Vec<i64>>) {
    let mut at = twcc.reference_time_us();
    for (seq, status) in twcc.packets().expect("feedback decodes") {
        let PacketStatus::Received { delta_us } = status else {
            continue;
        };
        at += delta_us;
        let times = given.get(&seq).map(Vec::as_slice).unwrap_or_default();
        assert!(
            times.iter().any(|t| (t - at).abs() <= 125),
            "{seq} reported at {at} us, given at {times:?}"
        );
    }
}

/// The transport-wide sequence number helpers on a parsed packet: an added or rewritten
/// element reads back, and the rest of the packet is unchanged.
fn check_transport_seq(data: &[u8], h: &RtpHeader<'_>, id: u8) {
    // An element adds at most 8 bytes: a new block, or 4 more than the old block's data.
    let mut out = vec![0u8; data.len() + 8];
    if let Ok(n) = write_with_transport_seq(data, id, 0xbeef, &mut out) {
        let written = RtpHeader::parse(&out[..n]).expect("packet with the element parses");
        assert_eq!(transport_seq(&written, id), Some(0xbeef));
        assert_eq!(written.payload(), h.payload());
        assert_eq!(written.padding_len(), h.padding_len());
    }
    let mut copy = data.to_vec();
    if set_transport_seq(&mut copy, id, 7) == Ok(true) {
        let rewritten = RtpHeader::parse(&copy).expect("rewritten packet parses");
        assert_eq!(transport_seq(&rewritten, id), Some(7));
    }
}

const KEY: [u8; 16] = [7; 16];
const SALT: [u8; 14] = [9; 14];

/// Unprotects `data` as SRTP and as SRTCP with fixed-key contexts of each profile.
pub fn fuzz_srtp_unprotect(data: &[u8]) {
    for profile in [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80] {
        let salt = &SALT[..profile.salt_len()];
        let Ok(mut ctx) = SrtpContext::new(profile, &KEY, salt) else {
            unreachable!("fixed key material has valid lengths")
        };
        let mut buf = data.to_vec();
        if let Ok(n) = ctx.unprotect_rtp(&mut buf) {
            assert!(n <= data.len());
        }
        let mut buf = data.to_vec();
        if let Ok(n) = ctx.unprotect_rtcp(&mut buf) {
            assert!(n <= data.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: a deterministic byte source for smoke-fuzzing in unit tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// Recorder operations (see `fuzz_twcc_recorder`): 40 packets 1 ms apart with a loss and
    /// a reordering, a poll with a 100-byte buffer, a jump, a wait and a timeout check.
    pub(crate) fn recorder_ops() -> Vec<u8> {
        let mut ops = Vec::new();
        for i in 0..40u8 {
            let step = match i {
                10 => 2,
                20 => 0xff,
                21 => 2,
                _ => 1,
            };
            ops.extend([0, step, 20]);
        }
        ops.extend([
            6, 15, 0, 4, 0x80, 0, 0, 1, 20, 7, 0, 0, 5, 10, 0, 6, 0xff, 0,
        ]);
        ops
    }

    #[test]
    fn random_and_mutated_inputs_do_not_panic() {
        let twcc = "8fcd0007fa17fa1709faff670027000d5fc2f103bf8e10000000000000 1c0400";
        let seeds: [&[u8]; 6] = [
            &hex::decode("b2600001000000021111111100000000aaaaaaaabede000210ff003201020300cafe0002").unwrap(),
            &hex::decode("81c9000100000001 81ca000300000001010261620000000081ce00020000000100000002".replace(' ', "")).unwrap(),
            &hex::decode("afcd0005fa17fa17422d3ff5009900012b681300200144018fce000500000001000000005245 4d42010be8f24baae1ab".replace(' ', "")).unwrap(),
            &hex::decode(twcc.replace(' ', "")).unwrap(),
            &recorder_ops(),
            include_bytes!("../../fuzz/corpus/seed-rtp_header/h265-ap-parameter-sets"),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let mut data = seeds[round % seeds.len()].to_vec();
            let edits = 1 + rng.next() % 4;
            for _ in 0..edits {
                let r = rng.next();
                match r % 3 {
                    0 if !data.is_empty() => {
                        let i = (r >> 8) as usize % data.len();
                        data[i] = (r >> 32) as u8;
                    }
                    1 => data.truncate((r >> 8) as usize % (data.len() + 1)),
                    _ => data.push((r >> 8) as u8),
                }
            }
            fuzz_rtp_header(&data);
            fuzz_rtcp(&data);
            fuzz_srtp_unprotect(&data);
            fuzz_twcc_feedback(&data);
        }
        for len in 0..64 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz_rtp_header(&data);
            fuzz_rtcp(&data);
            fuzz_srtp_unprotect(&data);
            fuzz_twcc_feedback(&data);
        }
    }

    #[test]
    fn seeds_reach_the_twcc_decoder_and_recorder() {
        // The seeds themselves, unmutated: no invariant fails on them.
        fuzz_twcc_feedback(&recorder_ops());
        let twcc = hex::decode("8fcd0007fa17fa1709faff670027000d5fc2f103bf8e100000000000001c0400")
            .unwrap();
        fuzz_twcc_feedback(&twcc);
        fuzz_rtcp(&twcc);
    }

    #[test]
    fn h265_seeds_carry_a_keyframe_and_its_size() {
        // The seeds stay what their names say: x265's parameter sets in an aggregation packet,
        // an IDR picture's first fragment.
        let check = |seed: &[u8], size| {
            let h = RtpHeader::parse(seed).expect("seed parses as RTP");
            assert!(is_keyframe(VideoCodec::H265, h.payload()));
            assert_eq!(keyframe_size(VideoCodec::H265, h.payload()), size);
            fuzz_rtp_header(seed);
        };
        check(
            include_bytes!("../../fuzz/corpus/seed-rtp_header/h265-ap-parameter-sets"),
            Some((320, 240)),
        );
        check(
            include_bytes!("../../fuzz/corpus/seed-rtp_header/h265-fu-idr-start"),
            None,
        );
    }
}
