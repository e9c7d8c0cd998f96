//! Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01) on both
//! sides of the node, sans-IO.
//!
//! Towards a publisher rtcdn is the receiver: it records the transport-wide sequence number of
//! everything the publisher sends and returns feedback, which is what Chromium's bandwidth
//! estimate (and so its encoder's bitrate) runs on; REMB alone is its legacy path.
//!
//! Towards a player rtcdn is the sender: every packet gets rtcdn's own transport-wide number,
//! and the player's feedback feeds a [`BandwidthEstimator`] for that player.

use std::time::{Duration, Instant};

use rtp::rtcp::{PacketStatus, TransportCc};
use rtp::twcc::{set_transport_seq, transport_seq, write_with_transport_seq, TwccRecorder};
use rtp::{RtpHeader, SeqNo, Ssrc};

use crate::bwe::{BandwidthEstimator, BandwidthUsage, BweConfig};

/// The share of a player's packets lost above which its link counts as overloaded: where GCC's
/// loss-based control starts cutting its rate.
pub const CONGESTED_LOSS: f64 = 0.1;

/// The largest feedback packet, before SRTCP's index and tag: fits any path's MTU.
pub const MAX_FEEDBACK_LEN: usize = 1200;

/// The receiving side, towards a publisher: its packets' numbers in, feedback out.
#[derive(Debug)]
pub struct PublisherFeedback {
    extension_id: u8,
    recorder: TwccRecorder,
}

impl PublisherFeedback {
    /// For the negotiated extension `extension_id`.
    pub fn new(extension_id: u8) -> Self {
        PublisherFeedback {
            extension_id,
            recorder: TwccRecorder::new(),
        }
    }

    /// A packet arrived (any packet the publisher sent on the transport: media, retransmission
    /// or padding probe, all of which the publisher's estimate counts).
    pub fn on_packet(&mut self, now: Instant, header: &RtpHeader<'_>) {
        if let Some(seq) = transport_seq(header, self.extension_id) {
            self.recorder.on_packet(now, seq);
        }
    }

    /// Follows the publisher's bitrate: feedback takes about 5% of it, every 50 to 250 ms, as
    /// libwebrtc's receivers do.
    pub fn set_bitrate(&mut self, bitrate_bps: u64) {
        self.recorder
            .set_interval(TwccRecorder::interval_for_bitrate(bitrate_bps));
    }

    /// When feedback is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.recorder.poll_timeout()
    }

    /// The next feedback packet into `out` (at most [`MAX_FEEDBACK_LEN`] of it), when due;
    /// call until `None`.
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        media_ssrc: u32,
        out: &mut [u8],
    ) -> Option<usize> {
        let len = out.len().min(MAX_FEEDBACK_LEN);
        self.recorder
            .poll_feedback(now, Ssrc(sender_ssrc), Ssrc(media_ssrc), &mut out[..len])
            .ok()
            .flatten()
    }
}

/// Video packets whose transport-wide number is remembered, to write a retransmission of the
/// original datagram byte for byte (same SRTP index, so the same bytes, or GCM's nonce would be
/// reused): at least the 512 packets of the retransmission cache.
const REMEMBERED: usize = 1024;

/// Why a packet could not be numbered for the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// The packet's header extensions cannot take the element (see
    /// [`rtp::twcc::write_with_transport_seq`]), or `out` is too small.
    #[error("cannot add the transport-wide sequence number: {0}")]
    Extension(rtp::Error),
    /// A retransmission of a packet whose number is no longer remembered.
    #[error("the retransmitted packet's transport-wide number is forgotten")]
    Forgotten,
}

/// The sending side, towards a player: numbers what it is sent and estimates its bandwidth.
#[derive(Debug)]
pub struct PlayerFeedback {
    extension_id: u8,
    /// The next transport-wide number (extended).
    next: u64,
    /// (output video sequence number, transport-wide number) by output sequence number.
    video_numbers: Box<[(u16, u16)]>,
    /// Times in the player's feedback are offsets from its reference time; they are placed
    /// after this instant (only differences between them matter to the estimator).
    epoch: Instant,
    /// The last feedback's reference time, unwrapped (24 bits of 64 ms wrap after 12 days).
    reference: Option<i64>,
    estimator: BandwidthEstimator,
}

impl PlayerFeedback {
    /// For the negotiated extension `extension_id`; allocates the estimator's send history
    /// here, not on the forwarding path.
    pub fn new(extension_id: u8, now: Instant, config: BweConfig) -> Option<Self> {
        Some(PlayerFeedback {
            extension_id,
            next: 1,
            video_numbers: vec![(0, 0); REMEMBERED].into_boxed_slice(),
            epoch: now,
            reference: None,
            estimator: BandwidthEstimator::new(config).ok()?,
        })
    }

    /// Copies `plain` into `out` with room for the transport-wide number (added when the
    /// packet has no element of that id); returns the length. The number itself is written
    /// by [`PlayerFeedback::stamp`] once the packet is rewritten.
    pub fn copy_with_room(&self, plain: &[u8], out: &mut [u8]) -> Result<usize, StampError> {
        write_with_transport_seq(plain, self.extension_id, 0, out).map_err(StampError::Extension)
    }

    /// Writes the packet's transport-wide number into the rewritten packet in `out[..len]`
    /// (copied by [`PlayerFeedback::copy_with_room`]) and records it as sent. A video
    /// `retransmission` gets the number it first went out with, so its bytes are the same.
    pub fn stamp(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        video: bool,
        retransmission: bool,
    ) -> Result<(), StampError> {
        let out_seq = u16::from_be_bytes([packet[2], packet[3]]);
        let slot = usize::from(out_seq) % REMEMBERED;
        let number = if retransmission {
            match self.video_numbers[slot] {
                (seq, number) if seq == out_seq => number,
                _ => return Err(StampError::Forgotten),
            }
        } else {
            let number = self.next as u16;
            if video {
                self.video_numbers[slot] = (out_seq, number);
            }
            number
        };
        set_transport_seq(packet, self.extension_id, number).map_err(StampError::Extension)?;
        if !retransmission {
            self.estimator.on_packet_sent(now, self.next, packet.len());
            self.next += 1;
        }
        Ok(())
    }

    /// Numbers a new packet that already has room for the element (an RTX packet copied from
    /// one that carried it); false when it has none.
    pub fn stamp_new(&mut self, now: Instant, packet: &mut [u8]) -> bool {
        let number = self.next as u16;
        if set_transport_seq(packet, self.extension_id, number) != Ok(true) {
            return false;
        }
        self.estimator.on_packet_sent(now, self.next, packet.len());
        self.next += 1;
        true
    }

    /// The player's transport-cc feedback.
    pub fn on_feedback(&mut self, now: Instant, feedback: &TransportCc<'_>) {
        let Ok(packets) = feedback.packets() else {
            return;
        };
        let reference = self.unwrap_reference(feedback.reference_time_us());
        // Offsets from the epoch: an hour in, so deltas before the first reference never go
        // below it.
        let base = self.epoch + Duration::from_secs(3600);
        let highest = SeqNo::new(self.next.saturating_sub(1));
        let mut arrival = reference;
        let results = packets.map(|(seq, status)| {
            let seq = highest.extend(seq).value();
            let at = match status {
                PacketStatus::NotReceived => None,
                PacketStatus::Received { delta_us } => {
                    arrival += delta_us;
                    u64::try_from(arrival)
                        .ok()
                        .map(|us| base + Duration::from_micros(us))
                }
            };
            (seq, at)
        });
        self.estimator.on_feedback(now, results);
    }

    fn unwrap_reference(&mut self, reference_us: i64) -> i64 {
        let unwrapped = match self.reference {
            None => reference_us,
            Some(last) => {
                let wrap = TransportCc::REFERENCE_TIME_WRAP_US;
                let cycle = last - last.rem_euclid(wrap);
                // The candidate nearest the last one, in this cycle or a neighbour.
                [cycle - wrap, cycle, cycle + wrap]
                    .into_iter()
                    .map(|c| c + reference_us)
                    .min_by_key(|c| (c - last).abs())
                    .unwrap_or(reference_us)
            }
        };
        self.reference = Some(unwrapped);
        unwrapped
    }

    /// A REMB from the player caps the estimate.
    pub fn on_remb(&mut self, now: Instant, bitrate_bps: u64) {
        self.estimator.on_remb(now, bitrate_bps);
    }

    /// The player's available bandwidth as estimated so far.
    pub fn estimate_bps(&self) -> u64 {
        self.estimator.estimate_bps()
    }

    /// What the player reported receiving lately.
    pub fn acked_bps(&self) -> Option<u64> {
        self.estimator.acked_bps()
    }

    /// Whether the player's feedback shows its link overloaded now: a queue building (the
    /// delay trend), or more than [`CONGESTED_LOSS`] of its packets lost. An estimate that fell
    /// without this fell because less was sent (see [`crate::simulcast::LayerEstimate`]).
    pub fn congested(&self) -> bool {
        self.estimator.usage() == BandwidthUsage::Overuse
            || self.estimator.loss_fraction() > CONGESTED_LOSS
    }

    /// The estimate once it rests on a measurement: `None` until the player's feedback has
    /// shown what it receives ([`PlayerFeedback::acked_bps`]). Before that the estimate is only
    /// the configured start value, which says nothing about this player's link.
    pub fn measured_estimate_bps(&self) -> Option<u64> {
        self.acked_bps().map(|_| self.estimate_bps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp::rtcp::TransportCcBuilder;

    fn packet(seq: u16, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        rtp::RtpHeaderBuilder::new(rtp::Pt::new(96), seq, 0, Ssrc(1))
            .write_to(&mut p)
            .unwrap();
        p
    }

    fn player() -> PlayerFeedback {
        PlayerFeedback::new(3, Instant::now(), BweConfig::default()).unwrap()
    }

    #[test]
    fn no_measured_estimate_before_feedback_shows_what_the_player_receives() {
        let p = player();
        assert_eq!(p.estimate_bps(), BweConfig::default().start_bps);
        assert_eq!(p.measured_estimate_bps(), None);
    }

    #[test]
    fn players_packets_are_numbered_and_a_retransmission_keeps_its_number() {
        let now = Instant::now();
        let mut p = player();
        let mut sent = Vec::new();
        for seq in 100..103u16 {
            let mut out = [0u8; 1500];
            let len = p.copy_with_room(&packet(seq, 200), &mut out).unwrap();
            p.stamp(now, &mut out[..len], true, false).unwrap();
            let header = RtpHeader::parse(&out[..len]).unwrap();
            assert_eq!(transport_seq(&header, 3), Some(seq - 99));
            sent.push(out[..len].to_vec());
        }
        // The retransmission of 101 is the same bytes.
        let mut out = [0u8; 1500];
        let len = p.copy_with_room(&packet(101, 200), &mut out).unwrap();
        p.stamp(now, &mut out[..len], true, true).unwrap();
        assert_eq!(&out[..len], sent[1].as_slice());
        // A packet numbered long ago is forgotten: no guess.
        let len = p.copy_with_room(&packet(5000, 200), &mut out).unwrap();
        assert_eq!(
            p.stamp(now, &mut out[..len], true, true),
            Err(StampError::Forgotten)
        );
    }

    #[test]
    fn feedback_reaches_the_estimator_in_transport_numbers() {
        let start = Instant::now();
        let mut p = player();
        let mut out = [0u8; 1500];
        // 2 Mbit/s for two seconds, every packet reported received 20 ms later, in feedback
        // every 50 ms.
        let mut builder = TransportCcBuilder::new();
        let mut fb = [0u8; 1500];
        let mut fb_count = 0u8;
        let mut sent = Vec::new();
        for i in 0..400u64 {
            let at = start + Duration::from_millis(i * 5);
            let len = p.copy_with_room(&packet(i as u16, 1250), &mut out).unwrap();
            p.stamp(at, &mut out[..len], true, false).unwrap();
            sent.push((i as u16 + 1, at));
            if i % 10 == 9 {
                let now = at + Duration::from_millis(20);
                let base_us = (sent[0].1 - start).as_micros() as i64 + 20_000;
                builder.start(sent[0].0, base_us, fb_count, 1200);
                for (seq, when) in sent.drain(..) {
                    let arrival = (when - start).as_micros() as i64 + 20_000;
                    assert!(builder.push(seq, Some(arrival)).unwrap());
                }
                let n = builder.write_to(Ssrc(9), Ssrc(1), &mut fb).unwrap();
                let feedback = TransportCc::parse(&fb[..n]).unwrap();
                p.on_feedback(now, &feedback);
                fb_count = fb_count.wrapping_add(1);
            }
        }
        let estimate = p.estimate_bps();
        assert!(
            estimate >= 1_500_000,
            "an unloaded link keeps up with 2 Mbit/s: {estimate}"
        );
        let acked = p.acked_bps().expect("acknowledged bitrate");
        assert!((1_600_000..2_400_000).contains(&acked), "{acked}");
        assert_eq!(p.measured_estimate_bps(), Some(estimate));
    }

    #[test]
    fn the_reference_time_unwraps() {
        let mut p = player();
        let wrap = TransportCc::REFERENCE_TIME_WRAP_US;
        assert_eq!(p.unwrap_reference(wrap - 64_000), wrap - 64_000);
        assert_eq!(p.unwrap_reference(0), wrap);
        assert_eq!(
            p.unwrap_reference(wrap - 64_000),
            wrap - 64_000,
            "reordered"
        );
    }

    #[test]
    fn publisher_packets_are_recorded_and_answered() {
        let start = Instant::now();
        let mut f = PublisherFeedback::new(3);
        let mut buf = [0u8; 1500];
        for seq in 0..10u16 {
            let len = write_with_transport_seq(&packet(seq, 100), 3, seq, &mut buf).unwrap();
            let header = RtpHeader::parse(&buf[..len]).unwrap();
            f.on_packet(start + Duration::from_millis(u64::from(seq)), &header);
        }
        let due = f.poll_timeout().expect("feedback due");
        let n = f.poll_feedback(due, 7, 1, &mut buf).expect("feedback");
        let feedback = TransportCc::parse(&buf[..n]).unwrap();
        assert_eq!((feedback.base_seq, feedback.status_count), (0, 10));
        assert!(f.poll_feedback(due, 7, 1, &mut buf).is_none());
    }
}
