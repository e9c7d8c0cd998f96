//! The `rtmp_input` fuzz target's body: bytes into a server-side RTMP connection.

/// Bytes into a server-side RTMP connection (see `fuzz/README.md`, `rtmp_input`). The first
/// byte picks the mode: bit 0 starts after a real handshake, bit 1 feeds `[len: u16][message]…`
/// straight to the FLV parsers (classic and Enhanced RTMP), the H.264, H.265, VP9 and AV1 packetizers and
/// the audio
/// (the AAC to Opus transcoder, Opus forwarded as it comes; a length with its top bit set is
/// an audio message), bits 2.. size the reads.
pub fn fuzz_rtmp_input(data: &[u8]) {
    use crate::rtmp::audio::RtmpAudio;
    use crate::rtmp::chunk_guard::ChunkLimits;
    use crate::rtmp::nal_rtp::RTP_MAX_PACKET;
    use crate::rtmp::publisher::RtmpPublisher;
    use crate::rtmp::{RtmpConnection, RtmpEvent};
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};

    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut publisher = RtmpPublisher::new(1, 0, 0);
    let mut video = |timestamp_ms: u32, message: &[u8]| {
        let _ = publisher.handle_video(timestamp_ms, message, |packet, _| {
            assert!(packet.len() <= RTP_MAX_PACKET, "packets fit the MTU");
        });
    };
    let mut transcoder = RtmpAudio::new(1, 0, 0);
    transcoder.set_registered(true);
    let mut audio = |timestamp_ms: u32, message: &[u8]| {
        let _ = transcoder.handle(timestamp_ms, message, |packet| {
            assert!(packet.len() <= 12 + 1275, "one Opus frame a packet");
            assert_eq!(packet[1] & 0x7F, crate::rtmp::aac_opus::OPUS_PT);
        });
    };
    if mode & 2 != 0 {
        let mut rest = data;
        let mut timestamp = 0u32;
        while let [hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi & 0x7F, *lo])).min(tail.len());
            if *hi & 0x80 != 0 {
                audio(timestamp, &tail[..len]);
            } else {
                video(timestamp, &tail[..len]);
            }
            timestamp = timestamp.wrapping_add(33);
            rest = &tail[len..];
        }
        return;
    }
    let mut server = RtmpConnection::new(vec!["live".into()], ChunkLimits::default());
    if mode & 1 != 0 {
        let mut client = Handshake::new(PeerType::Client);
        let Ok(c0c1) = client.generate_outbound_p0_and_p1() else {
            return;
        };
        server.handle_input(&c0c1).expect("a real handshake passes");
        let answer = server.output().to_vec();
        server.clear_output();
        if let Ok(HandshakeProcessResult::Completed { response_bytes, .. }) =
            client.process_bytes(&answer)
        {
            server
                .handle_input(&response_bytes)
                .expect("a real handshake passes");
        }
        server.clear_output();
    }
    let read = usize::from(mode >> 2) * 17 + 1;
    for part in data.chunks(read) {
        if server.handle_input(part).is_err() {
            return;
        }
        server.clear_output();
        while let Some(event) = server.poll_event() {
            match event {
                RtmpEvent::PublishRequested { .. } => {
                    let _ = server.accept_publish();
                }
                RtmpEvent::Video { timestamp_ms, data } => video(timestamp_ms, &data),
                RtmpEvent::Audio { timestamp_ms, data } => audio(timestamp_ms, &data),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The committed seeds (classic AAC; Enhanced RTMP `avc1` and Opus, with refused FourCCs
    /// and packet types, `vp09`, `av01`, `hvc1`, also cut at every length) run through the
    /// target's body.
    #[test]
    fn the_seeds_and_their_truncations_pass_the_target() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/seed-rtmp_input");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let seed = std::fs::read(&path).unwrap();
            super::fuzz_rtmp_input(&seed);
            // The transcoder's seed is slow to cut everywhere in a debug build.
            if path.to_string_lossy().contains("enhanced") {
                for len in 0..seed.len() {
                    super::fuzz_rtmp_input(&seed[..len]);
                }
            }
        }
    }

    /// The `av01` seed's messages (FLV mode) reach the AV1 packetizer: its temporal units go
    /// out as AV1 RTP, the malformed ones are refused.
    #[test]
    fn the_av01_seed_goes_through_the_av1_packetizer() {
        use crate::rtmp::publisher::{RtmpPublisher, VideoError, VideoOutcome, AV1_PT};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/seed-rtmp_input/flv-enhanced-av01");
        let seed = std::fs::read(path).unwrap();
        let mut publisher = RtmpPublisher::new(1, 0, 0);
        let (mut frames, mut malformed, mut packets) = (0, 0, 0);
        let mut rest = &seed[1..];
        while let [hi, lo, tail @ ..] = rest {
            let (message, after) = tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])));
            let outcome = publisher.handle_video(0, message, |packet, _| {
                assert_eq!(packet[1] & 0x7F, AV1_PT);
                packets += 1;
            });
            match outcome {
                Ok(VideoOutcome::Frame(_)) => frames += 1,
                Err(VideoError::Av1(_)) => malformed += 1,
                _ => {}
            }
            rest = after;
        }
        assert_eq!(
            (frames, malformed),
            (5, 2),
            "an inter frame after a bad one waits"
        );
        assert!(packets >= 8, "{packets} packets");
    }

    /// The `hvc1` seed's messages (FLV mode: x265's hvcC, an IDR longer than a packet, a
    /// TRAIL_R, a truncated hvcC, another TRAIL_R) reach the H.265 packetizer.
    #[test]
    fn the_hvc1_seed_goes_through_the_h265_packetizer() {
        use crate::rtmp::flv::FlvError;
        use crate::rtmp::publisher::{RtmpPublisher, VideoError, VideoOutcome, H265_PT};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus/seed-rtmp_input/flv-enhanced-hvc1");
        let seed = std::fs::read(path).unwrap();
        let mut publisher = RtmpPublisher::new(1, 0, 0);
        let (mut frames, mut bad_configs, mut packets) = (0, 0, 0);
        let mut rest = &seed[1..];
        while let [hi, lo, tail @ ..] = rest {
            let (message, after) = tail.split_at(usize::from(u16::from_be_bytes([*hi, *lo])));
            let outcome = publisher.handle_video(0, message, |packet, _| {
                assert_eq!(packet[1] & 0x7F, H265_PT);
                packets += 1;
            });
            match outcome {
                Ok(VideoOutcome::Frame(_)) => frames += 1,
                Err(VideoError::Flv(FlvError::BadHevcConfig(_))) => bad_configs += 1,
                _ => {}
            }
            rest = after;
        }
        assert_eq!((frames, bad_configs), (3, 1));
        // VPS, SPS, PPS, three fragments of the IDR; two TRAIL_R packets.
        assert_eq!(packets, 3 + 3 + 2);
    }
}
