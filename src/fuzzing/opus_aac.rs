//! The `opus_aac` fuzz target's body: a stream's Opus RTP into an RTMP player's Opus → AAC
//! transcoder.

/// A channel byte (1 or 2 by its low bit), then packets framed `[len: u16][packet]…` into
/// [`OpusToAac`](crate::rtmp::opus_aac::OpusToAac) for payload type 111, each at a later
/// arrival time (see `fuzz/README.md`, `opus_aac`): the sequence header comes first and once,
/// every frame is a raw AAC tag within the encoder's bound, on a clock that never goes back.
pub fn fuzz_opus_aac(data: &[u8]) {
    use crate::rtmp::opus_aac::{FlvAac, OpusToAac};

    let Some((&channels, mut rest)) = data.split_first() else {
        return;
    };
    let channels = 1 + (channels & 1);
    let Ok(mut aac) = OpusToAac::new(111, channels) else {
        return;
    };
    let flv = if channels == 2 { 0xAF } else { 0xAE };
    let (mut configs, mut last_ms, mut now_ms) = (0, 0u32, 0u32);
    let mut check = |out: FlvAac<'_>| match out {
        FlvAac::Config { body, .. } => {
            configs += 1;
            assert_eq!(configs, 1, "one sequence header");
            assert_eq!(&body[..2], &[flv, 0]);
        }
        FlvAac::Frame { timestamp_ms, body } => {
            assert_eq!(configs, 1, "the sequence header before any frame");
            assert!(timestamp_ms >= last_ms, "the audio clock never goes back");
            last_ms = timestamp_ms;
            assert_eq!(&body[..2], &[flv, 1]);
            assert!(body.len() > 2 && body.len() <= 2 + 768 * 2);
        }
    };
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        aac.push(&tail[..len], now_ms, &mut check);
        now_ms += 20;
        rest = &tail[len..];
    }
}
