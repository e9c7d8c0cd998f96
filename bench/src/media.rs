//! Synthetic media: RTP packets whose payload says what they are (stream, sequence, send time)
//! and is filled with a pattern derived from that, so a receiver can check every byte.

use rtp::{Pt, RtpHeaderBuilder, Ssrc};

/// Marks a synthetic payload.
pub const MAGIC: [u8; 4] = *b"RTCD";
/// Bytes of the payload header: magic, sequence (u64), send time (u64 ns), phase (u32).
pub const PAYLOAD_HEADER: usize = 4 + 8 + 8 + 4;

/// What a receiver reads back from a synthetic payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The sender's running packet number.
    pub sequence: u64,
    /// The sender's clock when it sent the packet (ns since its start).
    pub sent_at_ns: u64,
    /// A label the test uses (e.g. warm-up 0, measured 1).
    pub phase: u32,
}

fn pattern(sequence: u64, i: usize) -> u8 {
    (sequence as usize).wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) as u8
}

/// Writes an RTP packet of `total_len` bytes carrying `probe` into `buf`; returns its length.
#[allow(clippy::too_many_arguments)]
pub fn write_packet(buf: &mut [u8], pt: u8, ssrc: u32, rtp_seq: u16, rtp_ts: u32, marker: bool, probe: Probe, total_len: usize) -> usize {
    let mut header = RtpHeaderBuilder::new(Pt::new(pt), rtp_seq, rtp_ts, Ssrc(ssrc));
    header.marker = marker;
    let header_len = header.write_to(buf).expect("buffer holds an RTP header");
    let total_len = total_len.max(header_len + PAYLOAD_HEADER).min(buf.len());
    let payload = &mut buf[header_len..total_len];
    payload[..4].copy_from_slice(&MAGIC);
    payload[4..12].copy_from_slice(&probe.sequence.to_be_bytes());
    payload[12..20].copy_from_slice(&probe.sent_at_ns.to_be_bytes());
    payload[20..24].copy_from_slice(&probe.phase.to_be_bytes());
    for (i, byte) in payload[PAYLOAD_HEADER..].iter_mut().enumerate() {
        *byte = pattern(probe.sequence, i);
    }
    total_len
}

/// Why a received payload is not what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Not an RTP packet.
    #[error("not RTP: {0}")]
    Rtp(String),
    /// Not a synthetic payload.
    #[error("payload lacks the magic")]
    NotSynthetic,
    /// A filler byte differs: the payload was corrupted on the way.
    #[error("payload byte {index} of packet {sequence} is corrupted")]
    Corrupted { sequence: u64, index: usize },
}

/// Reads and verifies a received packet; returns its probe and payload type.
pub fn read_packet(packet: &[u8]) -> Result<(Probe, u8), ProbeError> {
    let header = rtp::RtpHeader::parse(packet).map_err(|e| ProbeError::Rtp(e.to_string()))?;
    let payload = header.payload();
    if payload.len() < PAYLOAD_HEADER || payload[..4] != MAGIC {
        return Err(ProbeError::NotSynthetic);
    }
    let word = |r: std::ops::Range<usize>| payload[r].iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    let probe = Probe { sequence: word(4..12), sent_at_ns: word(12..20), phase: word(20..24) as u32 };
    if let Some(index) = payload[PAYLOAD_HEADER..].iter().enumerate().position(|(i, b)| *b != pattern(probe.sequence, i)) {
        return Err(ProbeError::Corrupted { sequence: probe.sequence, index });
    }
    Ok((probe, header.payload_type().value()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip_and_corruption_is_found() {
        let mut buf = [0u8; 1500];
        let probe = Probe { sequence: 77, sent_at_ns: 123_456, phase: 1 };
        let len = write_packet(&mut buf, 96, 0x1234, 5, 9000, true, probe, 1200);
        assert_eq!(len, 1200);
        assert_eq!(read_packet(&buf[..len]), Ok((probe, 96)));
        buf[600] ^= 1;
        assert!(matches!(read_packet(&buf[..len]), Err(ProbeError::Corrupted { sequence: 77, .. })));
        assert_eq!(read_packet(&[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]), Err(ProbeError::NotSynthetic));
    }
}
