//! RTX (RFC 4588) both ways through one node.
//!
//! Players: two players that offer rtx (one over WHEP, one over the Flashphoner WebSocket
//! protocol) get the video packets they NACK back as RTX packets: their RTX SSRC and payload
//! type, their own RTX sequence numbers one after the other, the timestamp the packet first
//! went out with, and the number they lost (OSN) in front of the original payload. A player
//! that does not offer rtx gets the packet as it first went out.
//!
//! Publishers: a publisher that offers rtx sends a packet it "lost" on its way up as RTX; every
//! player gets it as the media packet it carries. The same packet again, one that arrived
//! anyway, and a padding-only probe are counted and dropped, never forwarded.
//!
//! Both directions make no heap allocation on the media cores: the test installs the counting
//! allocator the `rtcdn` binary uses.
//!
//! Relays: an origin negotiates rtx with its edge, and answers the edge's NACKs with RTX,
//! which the edge recognises as its publisher's. Everything is sent to 127.0.0.1 only.

use std::alloc::System;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rtcdn::alloc_count::CountingAllocator;
use rtcdn::dtls::DtlsCertificate;
use rtcdn_bench::client::{ClientSession, Mode, OfferOptions, VIDEO_PT, VIDEO_RTX_PT};
use rtcdn_bench::media::{read_packet, Probe};

mod common;
use common::{
    cdn_pair, core_stat, is_video, nack, nack_lost, play_until_media, rtp_seq, send,
    send_losing_video, test_node, wait_for_core_stat, warm_up_video_mappings, Mapping, Streaming,
};

#[global_allocator]
static GLOBAL: CountingAllocator<System> = CountingAllocator(System);

const STREAM: &str = "rtx";
const RTX: OfferOptions = OfferOptions {
    rtx: true,
    transport_cc: false,
    simulcast: false,
    layer: None,
    transport: rtcdn_bench::link::Transport::Udp,
};
/// Packets sent per loss round.
const ROUND: u64 = 40;

/// Packet `n` as `common::send` would send it, as an RTX packet of the publisher's RTX stream:
/// its SSRC, payload type and `rtx_seq`, the original sequence number, then the payload.
fn publisher_rtx(n: u64, rtx_ssrc: u32, rtx_seq: u16) -> Vec<u8> {
    let mut original = [0u8; 1500];
    let probe = Probe {
        sequence: n,
        sent_at_ns: 0,
        phase: 3,
    };
    let len = common::write_synthetic(&mut original, (1, 0), probe);
    let mut rtx = original[..12].to_vec();
    rtx[1] = (rtx[1] & 0x80) | VIDEO_RTX_PT;
    rtx[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
    rtx[8..12].copy_from_slice(&rtx_ssrc.to_be_bytes());
    rtx.extend_from_slice(&rtp_seq(n).to_be_bytes());
    rtx.extend_from_slice(&original[12..len]);
    rtx
}

/// Turns an RTX packet a player received back into the media packet it repairs, checking the
/// RTX header on the way; returns it with the RTX sequence number.
fn player_unwrap(packet: &[u8], rtx_ssrc: u32, mapping: &Mapping) -> (Vec<u8>, u16) {
    let header = rtp::RtpHeader::parse(packet).unwrap();
    assert_eq!(header.ssrc().0, rtx_ssrc, "on the RTX SSRC");
    assert_eq!(header.payload_type().value(), VIDEO_RTX_PT);
    let at = header.payload_offset();
    let osn = u16::from_be_bytes([packet[at], packet[at + 1]]);
    let mut media = packet[..at].to_vec();
    media[1] = (media[1] & 0x80) | VIDEO_PT;
    media[2..4].copy_from_slice(&osn.to_be_bytes());
    media[8..12].copy_from_slice(&mapping.ssrc.to_be_bytes());
    media.extend_from_slice(&packet[at + 2..]);
    (media, header.sequence_number())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_are_answered_as_rtx_when_offered_and_a_publishers_rtx_becomes_media() {
    let node = test_node(2);
    let base = format!("http://{}", node.http_addr());
    let ws = format!("ws://{}/", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let mut publisher =
        ClientSession::connect_with(&base, Mode::Publish, STREAM, &certificate, timeout, RTX)
            .await
            .expect("publish");
    let (rtx_pt, publisher_rtx_ssrc) = publisher.video_rtx.expect("the node takes rtx");
    assert_eq!(rtx_pt, VIDEO_RTX_PT);
    let mut players = vec![
        ClientSession::connect_with(&base, Mode::Play, STREAM, &certificate, timeout, RTX)
            .await
            .expect("WHEP with rtx"),
        ClientSession::connect(&base, Mode::Play, STREAM, &certificate, timeout)
            .await
            .expect("WHEP without rtx"),
        ClientSession::connect_ws_with(&ws, Mode::Play, STREAM, &certificate, timeout, None, RTX)
            .await
            .expect("WebSocket play with rtx"),
    ];
    let rtx_ssrcs: Vec<Option<u32>> = players
        .iter()
        .map(|p| {
            p.video_rtx
                .map(|(pt, ssrc)| (pt == VIDEO_RTX_PT).then_some(ssrc).unwrap())
        })
        .collect();
    assert!(
        rtx_ssrcs[0].is_some() && rtx_ssrcs[1].is_none() && rtx_ssrcs[2].is_some(),
        "rtx in the answer exactly when offered: {rtx_ssrcs:?}"
    );

    // Warm up until every player receives video, and learn how it numbers it.
    let start = Instant::now();
    let mut seq = 0u64;
    let mappings =
        warm_up_video_mappings(&mut publisher, &mut players, &mut seq, start, timeout).await;

    // Two rounds of loss on the node→player hop; the second (and what follows) is measured,
    // the first makes whatever happens once per session (RTX's SRTP state) happen before.
    let mut rtx_seqs: Vec<Option<u16>> = vec![None; players.len()];
    let mut answered = 0;
    let mut allocations_before = 0;
    for round in 0..2 {
        if round == 1 {
            allocations_before = core_stat(&base, "media_allocations").await;
        }
        let sending = (&mut seq, start);
        let lost =
            send_losing_video(&mut publisher, &mut players, &mappings, sending, ROUND, 4).await;
        nack_lost(&mut players, &mappings, &lost).await;
        for (i, player) in players.iter_mut().enumerate() {
            let mapping = &mappings[i];
            let mut repaired = BTreeSet::new();
            while repaired.len() < lost.len() {
                let packet = player
                    .recv_rtp(Duration::from_secs(2))
                    .await
                    .unwrap_or_else(|| panic!("player {i} got {repaired:?} of {lost:?}"));
                let media = match rtx_ssrcs[i] {
                    Some(rtx_ssrc) => {
                        assert_eq!(packet.len(), 1202, "player {i}: OSN and the whole packet");
                        let (media, rtx_seq) = player_unwrap(&packet, rtx_ssrc, mapping);
                        let expected = rtx_seqs[i].map_or(rtx_seq, |s| s.wrapping_add(1));
                        assert_eq!(rtx_seq, expected, "player {i}: RTX numbers follow on");
                        rtx_seqs[i] = Some(rtx_seq);
                        media
                    }
                    None => {
                        assert_eq!(packet.len(), 1200, "player {i}: the packet as it went out");
                        packet
                    }
                };
                let header = rtp::RtpHeader::parse(&media).unwrap();
                let (probe, pt) = read_packet(&media).expect("the original payload");
                assert_eq!(pt, VIDEO_PT);
                assert!(lost.contains(&probe.sequence), "player {i}: {probe:?}");
                mapping.assert_numbers(&header, probe.sequence, i);
                assert!(repaired.insert(probe.sequence), "player {i}: twice");
            }
            assert_eq!(player.counters().srtp_failures, 0, "player {i}");
        }
        answered += (players.len() * lost.len()) as u64;
        assert_eq!(
            wait_for_core_stat(&base, "retransmissions_sent", answered).await,
            answered
        );
        // Two of the three players negotiated rtx.
        let as_rtx = answered / players.len() as u64 * 2;
        assert_eq!(wait_for_core_stat(&base, "rtx_sent", as_rtx).await, as_rtx);
    }
    assert_eq!(core_stat(&base, "nacks_forwarded_upstream").await, 0);

    // The publisher loses one video packet on its way up and sends it again as RTX.
    let first = seq;
    let missing = (first + 10..).find(|&n| is_video(n)).unwrap();
    while seq < first + ROUND {
        if seq == missing {
            seq += 1;
            continue;
        }
        send(&mut publisher, &mut seq, 2, start).await;
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    let mut rtx_seq = 4321u16;
    let mut publisher_rtx = |n: u64| {
        rtx_seq = rtx_seq.wrapping_add(1);
        publisher_rtx(n, publisher_rtx_ssrc, rtx_seq)
    };
    let repair = publisher_rtx(missing);
    publisher.send_rtp(&repair).await.unwrap();
    for (i, (player, mapping)) in players.iter_mut().zip(&mappings).enumerate() {
        let mut received = BTreeSet::new();
        while let Some(packet) = player.recv_rtp(Duration::from_millis(300)).await {
            let header = rtp::RtpHeader::parse(&packet).unwrap();
            let (probe, _) = read_packet(&packet).expect("packet intact");
            if probe.sequence == missing {
                assert_eq!(
                    packet.len(),
                    1200,
                    "player {i}: the media packet it carried"
                );
                assert_eq!(header.payload_type().value(), VIDEO_PT);
                mapping.assert_numbers(&header, missing, i);
            }
            assert!(received.insert(probe.sequence), "player {i}: twice");
        }
        let expected: BTreeSet<u64> = (first..first + ROUND).collect();
        assert_eq!(
            received, expected,
            "player {i} got the repaired packet as media"
        );
    }

    // The same packet again, one that arrived, and a padding-only bandwidth probe: dropped.
    let again = publisher_rtx(missing);
    publisher.send_rtp(&again).await.unwrap();
    let arrived = publisher_rtx(missing + 1);
    publisher.send_rtp(&arrived).await.unwrap();
    let mut probe = publisher_rtx(missing)[..12].to_vec();
    probe[0] |= 0x20;
    probe.extend(std::iter::repeat_n(0u8, 199));
    probe.push(200);
    publisher.send_rtp(&probe).await.unwrap();
    for (i, player) in players.iter_mut().enumerate() {
        if let Some(packet) = player.recv_rtp(Duration::from_millis(300)).await {
            panic!("player {i} got {:?}", read_packet(&packet));
        }
        // A copy forwarded again would reuse the SRTP index it went out with: rejected there.
        assert_eq!(player.counters().srtp_failures, 0, "player {i}");
    }
    assert_eq!(wait_for_core_stat(&base, "rtx_dropped", 3).await, 3);
    assert_eq!(core_stat(&base, "rtp_malformed").await, 0);
    assert_eq!(core_stat(&base, "srtp_rejected").await, 0);

    let allocations = core_stat(&base, "media_allocations").await - allocations_before;
    assert_eq!(
        allocations, 0,
        "allocations on the media path answering with and unwrapping RTX"
    );
    node.stop();
}

/// The relay hop: an edge player that joins late NACKs three packets sent just before it
/// joined. The edge has them, but did not write them to this player, so it asks its publisher,
/// the origin's relay; the origin's cache has them and the relay's mapping wrote them, so the
/// origin answers as RTX. The edge already has those packets, so it drops them as repeats:
/// counted as such, not as SRTP replays (what the packets as first sent would have been).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answers_its_edges_nacks_as_rtx() {
    let (origin, edge) = cdn_pair();
    let origin_base = format!("http://{}", origin.http_addr());
    let edge_base = format!("http://{}", edge.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let timeout = Duration::from_secs(10);
    let publisher = ClientSession::connect(
        &origin_base,
        Mode::Publish,
        "relayed",
        &certificate,
        timeout,
    )
    .await
    .expect("publish to the origin");
    let streaming = Streaming::start(publisher, 0);
    let mut early =
        play_until_media(&edge_base, "relayed", &certificate, Duration::from_secs(20)).await;
    // From here on the edge has every packet, and the relay's mapping wrote them.
    let relayed = early.recv_rtp(Duration::from_secs(2)).await.expect("media");
    let relayed = read_packet(&relayed).expect("intact").0.sequence;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = ClientSession::connect(&edge_base, Mode::Play, "relayed", &certificate, timeout)
        .await
        .expect("play from the edge");
    let (ssrc, joined, offset) = loop {
        let packet = late
            .recv_rtp(Duration::from_secs(2))
            .await
            .expect("the late player receives");
        let (probe, pt) = read_packet(&packet).expect("intact");
        if pt == VIDEO_PT {
            let header = rtp::RtpHeader::parse(&packet).unwrap();
            let offset = header
                .sequence_number()
                .wrapping_sub(rtp_seq(probe.sequence));
            break (header.ssrc().0, probe.sequence, offset);
        }
    };
    let before: Vec<u64> = (relayed + 1..joined).filter(|&n| is_video(n)).collect();
    assert!(before.len() >= 3, "{relayed}..{joined}");
    let lost: Vec<u16> = before[before.len() - 3..]
        .iter()
        .map(|&n| rtp_seq(n).wrapping_add(offset))
        .collect();
    let srtp_rejected = core_stat(&edge_base, "srtp_rejected").await;
    late.send_rtcp(&nack(ssrc, &lost)).await.unwrap();
    for (base, key) in [
        (&edge_base, "nacks_forwarded_upstream"),
        (&origin_base, "retransmissions_sent"),
        (&edge_base, "rtx_dropped"),
    ] {
        assert_eq!(wait_for_core_stat(base, key, 3).await, 3, "{base} {key}");
    }
    assert_eq!(core_stat(&origin_base, "nacks_forwarded_upstream").await, 0);
    assert_eq!(core_stat(&edge_base, "srtp_rejected").await, srtp_rejected);
    assert_eq!(core_stat(&edge_base, "rtp_malformed").await, 0);
    streaming.stop().await;
    origin.stop();
    edge.stop();
}
