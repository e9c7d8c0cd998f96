//! Cross-checks against webrtc-srtp 0.17.2 (the test oracle): byte-for-byte equal output,
//! round trips in both directions, tampering, replay and rollover.

use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

use super::*;
use crate::{ExtensionElement, Pt, RtpHeaderBuilder, Ssrc};

const PROFILES: [SrtpProfile; 2] = [SrtpProfile::AeadAes128Gcm, SrtpProfile::Aes128CmHmacSha1_80];

fn keys(profile: SrtpProfile) -> (Vec<u8>, Vec<u8>) {
    let key = (0..16).map(|i| 0x10 + i as u8 * 7).collect();
    let salt = (0..profile.salt_len())
        .map(|i| 0xa0 ^ (i as u8 * 13))
        .collect();
    (key, salt)
}

fn ours(profile: SrtpProfile) -> SrtpContext {
    let (k, s) = keys(profile);
    SrtpContext::new(profile, &k, &s).unwrap()
}

fn theirs(profile: SrtpProfile) -> Context {
    let (k, s) = keys(profile);
    let p = match profile {
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::Aes128CmHmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
    };
    Context::new(&k, &s, p, None, None).unwrap()
}

/// Packet `n` of a varied stream: CSRCs, one- and two-byte extensions, payload sizes 1..300.
fn rtp_packet(ssrc: u32, seq: u16, n: usize) -> Vec<u8> {
    let csrcs = [Ssrc(0x1111_1111), Ssrc(0x2222_2222)];
    let abs = [0x12, 0x34, 0x56];
    let one = [
        ExtensionElement { id: 1, data: &abs },
        ExtensionElement {
            id: 3,
            data: &[0x80],
        },
    ];
    let two = [ExtensionElement { id: 17, data: &abs }];
    let mut b = RtpHeaderBuilder::new(
        Pt::new(96 + (n % 3) as u8),
        seq,
        3000 * n as u32,
        Ssrc(ssrc),
    );
    b.marker = n % 4 == 0;
    if n % 3 == 1 {
        b.csrcs = &csrcs[..1 + n % 2];
    }
    match n % 5 {
        1 | 2 => b.extensions = &one,
        3 => b.extensions = &two,
        _ => {}
    }
    let mut buf = vec![0u8; b.encoded_len()];
    b.write_to(&mut buf).unwrap();
    buf.extend((0..1 + (n * 37) % 300).map(|i| (i * 31 + n) as u8));
    buf
}

fn protect(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.profile().rtp_overhead(), 0);
    let n = ctx.protect_rtp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn protect_rtcp(ctx: &mut SrtpContext, plain: &[u8]) -> Vec<u8> {
    let mut buf = plain.to_vec();
    buf.resize(plain.len() + ctx.profile().rtcp_overhead(), 0);
    let n = ctx.protect_rtcp(&mut buf, plain.len()).unwrap();
    buf.truncate(n);
    buf
}

fn unprotect(ctx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = srtp.to_vec();
    let n = ctx.unprotect_rtp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn unprotect_rtcp(ctx: &mut SrtpContext, srtcp: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = srtcp.to_vec();
    let n = ctx.unprotect_rtcp(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Two interleaved SSRCs; the first wraps its sequence number after ~35 packets.
fn stream() -> Vec<Vec<u8>> {
    (0..300)
        .map(|n| {
            if n % 2 == 0 {
                rtp_packet(0xcafe_babe, 65_500u16.wrapping_add(n as u16 / 2), n)
            } else {
                rtp_packet(0x0000_0001, 1000 + n as u16 / 2, n)
            }
        })
        .collect()
}

fn rtcp_packets() -> Vec<Vec<u8>> {
    (0..40u8)
        .map(|n| {
            // RR from one of two senders, with a varying number of report-block-sized words.
            let words = 1 + usize::from(n % 7);
            let mut p = vec![0x80, 201, 0, words as u8];
            p.extend_from_slice(&[0, 0, 0, 1 + n % 2]);
            p.extend((0..4 * (words - 1)).map(|i| i as u8 ^ n));
            p
        })
        .collect()
}

#[test]
fn protect_matches_webrtc_srtp_byte_for_byte() {
    for profile in PROFILES {
        let (mut a, mut b) = (ours(profile), theirs(profile));
        for (n, p) in stream().iter().enumerate() {
            let mine = protect(&mut a, p);
            let oracle = b.encrypt_rtp(p).unwrap();
            assert_eq!(mine, &oracle[..], "{profile:?} packet {n}");
        }
        assert_eq!(a.roc(Ssrc(0xcafe_babe)), Some(1), "{profile:?} rolled over");
        assert_eq!(a.roc(Ssrc(1)), Some(0));
    }
}

#[test]
fn unprotects_webrtc_srtp_output() {
    for profile in PROFILES {
        let (mut a, mut b) = (ours(profile), theirs(profile));
        for p in stream() {
            let sealed = b.encrypt_rtp(&p).unwrap();
            assert_eq!(unprotect(&mut a, &sealed).unwrap(), p, "{profile:?}");
        }
    }
}

#[test]
fn webrtc_srtp_decrypts_our_output() {
    for profile in PROFILES {
        let (mut a, mut b) = (ours(profile), theirs(profile));
        for p in stream() {
            let sealed = protect(&mut a, &p);
            assert_eq!(&b.decrypt_rtp(&sealed).unwrap()[..], &p[..], "{profile:?}");
        }
    }
}

#[test]
fn tampering_fails_authentication_without_state_change() {
    for profile in PROFILES {
        let (mut tx, mut rx) = (ours(profile), ours(profile));
        let plain = rtp_packet(5, 7, 11);
        let sealed = protect(&mut tx, &plain);
        for at in [1, 2, 9, 12, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                unprotect(&mut rx, &bad),
                Err(Error::AuthenticationFailed),
                "{profile:?} byte {at}"
            );
        }
        assert_eq!(unprotect(&mut rx, &sealed).unwrap(), plain);
        // Shorter than header + tag.
        assert_eq!(unprotect(&mut rx, &sealed[..14]), Err(Error::Truncated));
    }
}

#[test]
fn replays_and_too_old_packets_are_rejected() {
    for profile in PROFILES {
        let (mut tx, mut rx) = (ours(profile), ours(profile));
        let sealed: Vec<_> = (0..1200u16)
            .map(|s| protect(&mut tx, &rtp_packet(9, s, 1)))
            .collect();
        unprotect(&mut rx, &sealed[0]).unwrap();
        assert_eq!(unprotect(&mut rx, &sealed[0]), Err(Error::Replayed));
        unprotect(&mut rx, &sealed[1199]).unwrap();
        // 300 is inside the 1024-packet window (libwebrtc's), 100 is not.
        unprotect(&mut rx, &sealed[300]).unwrap();
        assert_eq!(unprotect(&mut rx, &sealed[300]), Err(Error::Replayed));
        assert_eq!(unprotect(&mut rx, &sealed[100]), Err(Error::Replayed));
    }
}

#[test]
fn reordering_across_the_wrap_keeps_the_right_roc() {
    for profile in PROFILES {
        let (mut tx, mut rx) = (ours(profile), ours(profile));
        let seqs = [65_533u16, 65_534, 65_535, 0, 1, 2];
        let plain: Vec<_> = seqs.iter().map(|&s| rtp_packet(3, s, 2)).collect();
        let sealed: Vec<_> = plain.iter().map(|p| protect(&mut tx, p)).collect();
        for i in [0, 1, 3, 2, 5, 4] {
            assert_eq!(
                unprotect(&mut rx, &sealed[i]).unwrap(),
                plain[i],
                "{profile:?} {i}"
            );
        }
        assert_eq!(rx.roc(Ssrc(3)), Some(1));
    }
}

#[test]
fn srtcp_matches_and_round_trips_with_webrtc_srtp() {
    for profile in PROFILES {
        let (mut a, mut b) = (ours(profile), theirs(profile));
        let (mut a_rx, mut b_rx) = (ours(profile), theirs(profile));
        for (n, p) in rtcp_packets().iter().enumerate() {
            let mine = protect_rtcp(&mut a, p);
            let oracle = b.encrypt_rtcp(p).unwrap();
            assert_eq!(mine, &oracle[..], "{profile:?} rtcp {n}");
            assert_eq!(unprotect_rtcp(&mut a_rx, &oracle).unwrap(), *p);
            assert_eq!(&b_rx.decrypt_rtcp(&mine).unwrap()[..], &p[..]);
        }
    }
}

#[test]
fn srtcp_tamper_replay_and_unencrypted() {
    for profile in PROFILES {
        let (mut tx, mut rx) = (ours(profile), ours(profile));
        let p = &rtcp_packets()[3];
        let sealed = protect_rtcp(&mut tx, p);
        let mut bad = sealed.clone();
        bad[9] ^= 0x80;
        assert_eq!(
            unprotect_rtcp(&mut rx, &bad),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(unprotect_rtcp(&mut rx, &sealed).unwrap(), *p);
        assert_eq!(unprotect_rtcp(&mut rx, &sealed), Err(Error::Replayed));
        // Clearing the E flag changes the authenticated word.
        let word_at = sealed.len()
            - match profile {
                SrtpProfile::AeadAes128Gcm => 4,
                SrtpProfile::Aes128CmHmacSha1_80 => 14,
            };
        let mut clear = protect_rtcp(&mut tx, p);
        clear[word_at] &= 0x7F;
        assert_eq!(
            unprotect_rtcp(&mut rx, &clear),
            Err(Error::AuthenticationFailed)
        );
        assert_eq!(
            unprotect_rtcp(&mut rx, &sealed[..20]),
            Err(Error::Truncated)
        );
    }
}

#[test]
fn unencrypted_srtcp_authenticates() {
    // Build an E=0 packet by hand with the same transform, since neither side sends one.
    let profile = SrtpProfile::Aes128CmHmacSha1_80;
    let (mut tx, mut rx) = (ours(profile), ours(profile));
    let p = rtcp_packets()[2].clone();
    let len = p.len();
    let mut buf = p.clone();
    buf.resize(len + 14, 0);
    tx.protect_rtcp(&mut buf, len).unwrap();
    // Undo the encryption with a receive context, then re-tag as E=0.
    let mut out = vec![0u8; len + 14];
    out[..len].copy_from_slice(&p);
    out[len..len + 4].copy_from_slice(&2u32.to_be_bytes());
    let Cipher::Cm { rtcp, .. } = &tx.cipher else {
        unreachable!()
    };
    let tag = rtcp.tag_for_test(&out[..len + 4]);
    out[len + 4..].copy_from_slice(&tag);
    assert_eq!(unprotect_rtcp(&mut rx, &out).unwrap(), p);

    let profile = SrtpProfile::AeadAes128Gcm;
    let (tx, mut rx) = (ours(profile), ours(profile));
    let Cipher::Gcm { rtcp, .. } = &tx.cipher else {
        unreachable!()
    };
    let mut aad = p.clone();
    aad.extend_from_slice(&5u32.to_be_bytes());
    let tag = rtcp.seal_aad_only_for_test(0x0000_0001, 5, &aad);
    let mut out = p.clone();
    out.extend_from_slice(&tag);
    out.extend_from_slice(&5u32.to_be_bytes());
    assert_eq!(unprotect_rtcp(&mut rx, &out).unwrap(), p);
}

#[test]
fn rejects_bad_keys_and_small_buffers() {
    assert_eq!(
        SrtpContext::new(SrtpProfile::AeadAes128Gcm, &[0; 15], &[0; 12]).unwrap_err(),
        Error::KeyLength {
            expected: 16,
            got: 15
        }
    );
    assert_eq!(
        SrtpContext::new(SrtpProfile::Aes128CmHmacSha1_80, &[0; 16], &[0; 12]).unwrap_err(),
        Error::KeyLength {
            expected: 14,
            got: 12
        }
    );
    let mut ctx = ours(SrtpProfile::AeadAes128Gcm);
    let mut buf = rtp_packet(1, 1, 1);
    let len = buf.len();
    assert_eq!(
        ctx.protect_rtp(&mut buf, len),
        Err(Error::BufferTooSmall { needed: len + 16 })
    );
    assert_eq!(
        ctx.protect_rtp(&mut buf, len + 1),
        Err(Error::BufferTooSmall { needed: len + 1 })
    );
    assert_eq!(
        ctx.protect_rtcp(&mut [0x80, 201, 0, 0], 4),
        Err(Error::Truncated)
    );
    assert_eq!(SrtpProfile::AeadAes128Gcm.rtcp_overhead(), 20);
    assert_eq!(SrtpProfile::Aes128CmHmacSha1_80.rtcp_overhead(), 14);
    assert_eq!(
        SrtpProfile::from_dtls_id(7),
        Some(SrtpProfile::AeadAes128Gcm)
    );
}

/// A retransmission stream (RFC 4588) starts mid-session on a new SSRC, its random first
/// sequence number just before a wrap, while the media SSRC is already in its second roll: the
/// new SSRC's first index has ROC 0, as a receiver that first sees it assumes (RFC 3711 §3.3.1),
/// and it rolls over on its own.
#[test]
fn a_new_ssrc_mid_session_starts_at_roc_zero_and_rolls_over_on_its_own() {
    const MEDIA: u32 = 0x5eed_0001;
    const RTX: u32 = 0x5eed_0002;
    for profile in PROFILES {
        let (mut tx, mut rx, mut oracle_rx) = (ours(profile), ours(profile), theirs(profile));
        let mut n = 0;
        let mut round_trip = |tx: &mut SrtpContext, ssrc: u32, seq: u16| {
            let plain = rtp_packet(ssrc, seq, n);
            n += 1;
            let sealed = protect(tx, &plain);
            assert_eq!(unprotect(&mut rx, &sealed).unwrap(), plain, "{profile:?}");
            let theirs = oracle_rx.decrypt_rtp(&sealed).unwrap();
            assert_eq!(
                &theirs[..],
                &plain[..],
                "{profile:?} ssrc {ssrc:#x} seq {seq}"
            );
        };
        for seq in (65_520..=65_535).chain(0..20u16) {
            round_trip(&mut tx, MEDIA, seq);
        }
        assert_eq!(tx.roc(Ssrc(MEDIA)), Some(1));
        for (i, seq) in (65_530..=65_535).chain(0..6u16).enumerate() {
            round_trip(&mut tx, RTX, seq);
            round_trip(&mut tx, MEDIA, 20 + i as u16);
            let roc = u32::from(seq < 65_530);
            assert_eq!(tx.roc(Ssrc(RTX)), Some(roc), "{profile:?} seq {seq}");
        }
        assert_eq!(
            tx.roc(Ssrc(MEDIA)),
            Some(1),
            "the media stream is untouched"
        );
        assert_eq!(rx.roc(Ssrc(RTX)), Some(1));
    }
}

#[test]
fn a_repaired_packet_is_accepted_once_and_shares_the_media_streams_window() {
    let profile = SrtpProfile::AeadAes128Gcm;
    let (mut tx, mut rx) = (ours(profile), ours(profile));
    let sealed: Vec<_> = (0..1300u16)
        .map(|s| protect(&mut tx, &rtp_packet(9, 65_400u16.wrapping_add(s), 1)))
        .collect();
    // 65_400..65_409 arrive; 65_405 is lost, and repaired inside another stream.
    for (i, p) in sealed.iter().enumerate().take(10) {
        if i != 5 {
            unprotect(&mut rx, p).unwrap();
        }
    }
    assert_eq!(rx.accept_repaired(Ssrc(9), 65_403), Err(Error::Replayed));
    rx.accept_repaired(Ssrc(9), 65_405).unwrap();
    assert_eq!(rx.accept_repaired(Ssrc(9), 65_405), Err(Error::Replayed));
    // The original arriving late is now the duplicate.
    assert_eq!(unprotect(&mut rx, &sealed[5]), Err(Error::Replayed));
    // Across the wrap (index 65_536 + 1_114) and behind the 1024-packet window.
    unprotect(&mut rx, &sealed[1250]).unwrap();
    rx.accept_repaired(Ssrc(9), 65_400u16.wrapping_add(1249))
        .unwrap();
    assert_eq!(rx.roc(Ssrc(9)), Some(1));
    assert_eq!(rx.accept_repaired(Ssrc(9), 65_420), Err(Error::Replayed));
    // A stream not seen yet starts its state with the repaired packet.
    rx.accept_repaired(Ssrc(10), 7).unwrap();
    assert_eq!(rx.roc(Ssrc(10)), Some(0));
    assert_eq!(rx.accept_repaired(Ssrc(10), 7), Err(Error::Replayed));
}
