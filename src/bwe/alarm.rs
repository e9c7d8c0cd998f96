//! WCS's `NOT_ENOUGH_BANDWIDTH` rule for one player, sans-IO: the player's estimated bandwidth is
//! 10% or more below the publisher's bitrate.
//!
//! Estimates move with every burst, so the rule only fires after it held for
//! [`REPORTS_TO_RAISE`] reports in a row (a report a second), and fires again only after the
//! player recovered (within 5% of the bitrate, or above it) for as long: a viewer on a thin link
//! hears it once per episode, not every second.

/// Reports in a row below the rule before it fires, and above the recovery line before it
/// may fire again.
pub const REPORTS_TO_RAISE: u32 = 3;
/// The rule: the estimate is below this share of the publisher's bitrate.
const SHORTFALL: f64 = 0.9;
/// Recovered: the estimate is at least this share of it.
const RECOVERED: f64 = 0.95;
/// Below this the publisher sends too little for a comparison to mean anything (audio only,
/// a paused camera).
const MIN_PUBLISHER_BPS: u64 = 50_000;

/// What the player is told when the rule fires: WCS's `"<remote bitrate>/<network bandwidth>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotEnoughBandwidth {
    /// The publisher's bitrate, bit/s.
    pub publisher_bps: u64,
    /// The player's estimated bandwidth, bit/s.
    pub player_bps: u64,
}

impl NotEnoughBandwidth {
    /// The `info` string the Flashphoner SDK splits on `/`.
    pub fn info(&self) -> String {
        format!("{}/{}", self.publisher_bps, self.player_bps)
    }
}

/// One player's state under the rule.
#[derive(Debug, Default, Clone)]
pub struct BandwidthAlarm {
    below: u32,
    recovered: u32,
    raised: bool,
}

impl BandwidthAlarm {
    /// A report: the player's estimate and the publisher's current bitrate. Returns the event
    /// to send when the rule fires.
    pub fn update(&mut self, player_bps: u64, publisher_bps: u64) -> Option<NotEnoughBandwidth> {
        if publisher_bps < MIN_PUBLISHER_BPS {
            self.below = 0;
            return None;
        }
        let publisher = publisher_bps as f64;
        let player = player_bps as f64;
        if player < publisher * SHORTFALL {
            self.recovered = 0;
            self.below += 1;
            if !self.raised && self.below >= REPORTS_TO_RAISE {
                self.raised = true;
                return Some(NotEnoughBandwidth {
                    publisher_bps,
                    player_bps,
                });
            }
        } else {
            self.below = 0;
            if player >= publisher * RECOVERED {
                self.recovered += 1;
                if self.recovered >= REPORTS_TO_RAISE {
                    self.raised = false;
                }
            } else {
                self.recovered = 0;
            }
        }
        None
    }

    /// Whether the rule fired and the player has not recovered since.
    pub fn is_raised(&self) -> bool {
        self.raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_after_three_reports_below_and_again_only_after_recovering() {
        let mut alarm = BandwidthAlarm::default();
        let publisher = 1_500_000;
        assert_eq!(alarm.update(1_400_000, publisher), None, "7% below: fine");
        assert_eq!(alarm.update(300_000, publisher), None);
        assert_eq!(alarm.update(300_000, publisher), None);
        let fired = alarm
            .update(310_000, publisher)
            .expect("three reports below");
        assert_eq!(
            fired,
            NotEnoughBandwidth {
                publisher_bps: publisher,
                player_bps: 310_000
            }
        );
        assert_eq!(fired.info(), "1500000/310000");
        // Still short: no repeat.
        for _ in 0..10 {
            assert_eq!(alarm.update(300_000, publisher), None);
        }
        // Between the lines (92%): not recovered, not short.
        for _ in 0..5 {
            assert_eq!(alarm.update(1_380_000, publisher), None);
        }
        assert!(alarm.is_raised());
        // Recovered for three reports, then short again: fires again.
        for _ in 0..3 {
            assert_eq!(alarm.update(1_500_000, publisher), None);
        }
        assert!(!alarm.is_raised());
        assert_eq!(alarm.update(300_000, publisher), None);
        assert_eq!(alarm.update(300_000, publisher), None);
        assert!(alarm.update(300_000, publisher).is_some());
    }

    #[test]
    fn a_blip_or_a_silent_publisher_does_not_fire() {
        let mut alarm = BandwidthAlarm::default();
        for _ in 0..10 {
            assert_eq!(alarm.update(300_000, 1_000_000), None);
            assert_eq!(alarm.update(300_000, 1_000_000), None);
            assert_eq!(alarm.update(1_000_000, 1_000_000), None, "back up");
        }
        for _ in 0..10 {
            assert_eq!(alarm.update(1_000, 20_000), None, "audio only");
        }
    }
}
