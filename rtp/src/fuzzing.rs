//! Entry points for the fuzz targets in `fuzz/`: each target is a one-line call to one of
//! these. They panic only when an invariant of the crate is broken.

use crate::rtcp::{Rtcp, RtcpIter};
use crate::srtp::{SrtpContext, SrtpProfile};
use crate::{is_keyframe, RtpHeader, RtpRewriter, VideoCodec};

/// Parses `data` as an RTP packet and exercises every accessor, the keyframe detectors and an
/// in-place rewrite.
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
        ] {
            let _ = is_keyframe(codec, h.payload());
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

    #[test]
    fn random_and_mutated_inputs_do_not_panic() {
        let seeds: [&[u8]; 3] = [
            &hex::decode("b2600001000000021111111100000000aaaaaaaabede000210ff003201020300cafe0002").unwrap(),
            &hex::decode("81c9000100000001 81ca000300000001010261620000000081ce00020000000100000002".replace(' ', "")).unwrap(),
            &hex::decode("afcd0005fa17fa17422d3ff5009900012b681300200144018fce000500000001000000005245 4d42010be8f24baae1ab".replace(' ', "")).unwrap(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..3000 {
            let mut data = seeds[round % 3].to_vec();
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
        }
        for len in 0..64 {
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            fuzz_rtp_header(&data);
            fuzz_rtcp(&data);
            fuzz_srtp_unprotect(&data);
        }
    }
}
