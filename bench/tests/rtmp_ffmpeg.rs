//! RTMP publish -> WebRTC player (issue 15): ffmpeg publishes H.264 and AAC (made into Opus)
//! to the node's RTMP listener, and a WHEP player gets the stream as H.264 RTP from its first
//! packet: SPS, PPS and an IDR, then in-order packets with 90 kHz timestamps, keyframes again
//! at the encoder's interval, and the audio as 20 ms Opus packets. A second publish of the live name and a publish to an unknown
//! application are refused; garbage and a stalled handshake are closed while the listener goes
//! on. Everything stays on 127.0.0.1.

use std::time::{Duration, Instant};

use rtcdn::dtls::DtlsCertificate;
use rtcdn::node::Node;
use rtcdn_bench::client::{AUDIO_PT, H264_PT};

mod common;
use common::{
    collect_rtp, ffmpeg_publish, loopback_config, metrics_text, nal_types, play_when_live,
    sample_sum, stats_json,
};

/// A node with two cores and its RTMP listener on an ephemeral port.
fn rtmp_node() -> Node {
    let mut config = loopback_config(2);
    config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    Node::start(&config).expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_publishes_over_rtmp_and_a_whep_player_gets_h264_from_a_keyframe() {
    let node = rtmp_node();
    let rtmp = node.rtmp_addr().expect("RTMP listener runs");
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut encoder = ffmpeg_publish(&format!("rtmp://{rtmp}/live/rtmpcam"), 20);

    let mut player = play_when_live(&base, "rtmpcam", &certificate).await;
    let packets = collect_rtp(&mut player, Duration::from_secs(4)).await;
    assert!(packets.len() > 100, "only {} packets in 4 s", packets.len());
    let (headers, audio): (Vec<_>, Vec<_>) = packets
        .iter()
        .map(|p| rtp::RtpHeader::parse(p).expect("RTP"))
        .partition(|h| h.payload_type() == rtp::Pt::new(H264_PT));
    // The AAC as Opus, 20 ms a packet, from the second the node saw its player on.
    assert!(
        audio
            .iter()
            .all(|h| h.payload_type() == rtp::Pt::new(AUDIO_PT)),
        "H.264 and Opus only"
    );
    assert!(audio.len() >= 100, "{} Opus packets in 4 s", audio.len());
    for pair in audio.windows(2) {
        assert_eq!(
            pair[1].sequence_number(),
            pair[0].sequence_number().wrapping_add(1)
        );
        assert_eq!(pair[1].timestamp().wrapping_sub(pair[0].timestamp()), 960);
    }
    // From the start: the keyframe, SPS and PPS first.
    let first: Vec<Option<u8>> = headers
        .iter()
        .take(2)
        .map(|h| nal_types(h.payload()))
        .collect();
    assert_eq!(first, [Some(7), Some(8)], "SPS, PPS first");
    let first_frame = headers
        .iter()
        .take_while(|h| h.timestamp() == headers[0].timestamp());
    assert!(
        first_frame
            .clone()
            .any(|h| nal_types(h.payload()) == Some(5)),
        "an IDR in the first frame"
    );
    // In order, without gaps, on one SSRC.
    for pair in headers.windows(2) {
        assert_eq!(pair[0].ssrc(), pair[1].ssrc());
        assert_eq!(
            pair[1].sequence_number(),
            pair[0].sequence_number().wrapping_add(1),
            "packets in order"
        );
    }
    // Frames 1/30 s apart on the 90 kHz clock (to FLV's millisecond), each ended by the
    // marker bit.
    let frame_starts: Vec<u32> = headers
        .windows(2)
        .filter(|w| w[0].marker())
        .map(|w| w[1].timestamp().wrapping_sub(w[0].timestamp()))
        .collect();
    assert!(frame_starts.len() > 60, "{} frames", frame_starts.len());
    // FLV times are whole milliseconds: 33, 34, 33 ms.
    assert!(
        frame_starts.iter().all(|&d| (2970..=3060).contains(&d)),
        "frame steps {frame_starts:?}"
    );
    // The encoder's next keyframe (every 60 frames) comes again with SPS and PPS.
    let idrs = headers
        .iter()
        .enumerate()
        .filter(|(_, h)| nal_types(h.payload()) == Some(5))
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert!(
        idrs.len() >= 2,
        "a second keyframe within 4 s (-g 60 at 30 fps)"
    );
    for &i in &idrs {
        // SPS and PPS open the IDR's access unit (an SEI may sit between them and the IDR).
        let frame: Vec<Option<u8>> = headers[..i]
            .iter()
            .rev()
            .take_while(|h| h.timestamp() == headers[i].timestamp())
            .map(|h| nal_types(h.payload()))
            .collect();
        assert!(
            frame.contains(&Some(7)) && frame.contains(&Some(8)),
            "{frame:?}"
        );
    }

    // The stats show the ingest's bitrate and the encoder's keyframe interval (-g 60 at 30 fps),
    // which players' keyframe requests cannot shorten.
    let stats = stats_json(&base).await;
    let stream = &stats["streams"][0];
    assert_eq!(stream["name"], "rtmpcam");
    let bitrate = stream["bitrate_bps"].as_u64().unwrap_or(0);
    assert!(bitrate > 50_000, "ingest bitrate {stream}");
    let interval = stream["keyframe_interval_ms"].as_u64().unwrap_or(0);
    assert!(
        (1900..=2100).contains(&interval),
        "keyframe interval {stream}"
    );
    // The control API shows the interval too, and /metrics counts the publisher as an ingest.
    let url = format!("{base}/api/streams");
    let streams = rtcdn_bench::http::request(hyper::Method::GET, &url, None, String::new())
        .await
        .unwrap();
    let streams: serde_json::Value = serde_json::from_str(&streams.body).unwrap();
    assert_eq!(streams[0]["keyframe_interval_ms"].as_u64(), Some(interval));
    // And the picture size, from the SPS the node sends before every IDR.
    assert_eq!(
        (streams[0]["width"].as_u64(), streams[0]["height"].as_u64()),
        (Some(640), Some(360)),
        "{}",
        streams[0]
    );
    let metrics = metrics_text(&base, None).await;
    let role = |role: &str| {
        sample_sum(
            &metrics,
            "rtcdn_sessions_by_role{",
            &[&format!("role=\"{role}\"")],
        )
    };
    assert_eq!((role("ingest"), role("publisher")), (1.0, 0.0), "{metrics}");

    // The live name cannot be published twice, nor an unknown application.
    for url in [
        format!("rtmp://{rtmp}/live/rtmpcam"),
        format!("rtmp://{rtmp}/other/cam2"),
    ] {
        let second = ffmpeg_publish(&url, 2).wait_with_output().unwrap();
        assert!(!second.status.success(), "{url} must be refused");
    }
    // The first publisher is unharmed.
    assert!(player.recv_rtp(Duration::from_secs(2)).await.is_some());

    // The encoder stops: the player's stream ends.
    let _ = encoder.kill();
    let _ = encoder.wait();
    let ended = player.wait_ended(Duration::from_secs(10)).await;
    assert!(ended.is_some(), "the player ends with the RTMP publish");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_silent_rtmp_connections_are_closed_and_the_listener_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = loopback_config(1);
    config.rtmp.listen = Some("127.0.0.1:0".parse().unwrap());
    config.rtmp.handshake_timeout_secs = 1;
    let node = Node::start(&config).expect("node starts");
    let rtmp = node.rtmp_addr().expect("RTMP listener runs");
    let closed = |mut stream: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    };
    // Not RTMP at all.
    let mut garbage = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    let _ = garbage.write_all(&[0x47; 5000]).await;
    assert!(closed(garbage).await, "garbage closes the connection");
    // A handshake that never ends, a byte at a time.
    let mut slow = tokio::net::TcpStream::connect(rtmp).await.unwrap();
    slow.write_all(&[3]).await.unwrap();
    let started = Instant::now();
    assert!(closed(slow).await, "a stalled handshake is closed");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The listener still serves a real encoder.
    let mut encoder = ffmpeg_publish(&format!("rtmp://{rtmp}/live/after"), 3);
    let base = format!("http://{}", node.http_addr());
    let certificate = DtlsCertificate::generate().unwrap();
    let mut player = play_when_live(&base, "after", &certificate).await;
    assert!(player.recv_rtp(Duration::from_secs(3)).await.is_some());
    let _ = encoder.kill();
    let _ = encoder.wait();
    node.stop();
}
