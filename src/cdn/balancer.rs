//! The CDN 1.0 balancer: which edge a player is sent to. Sans-IO: the caller polls each node's
//! `/?action=stat` every `cdn.stats_poll_secs`, hands the answers (or their absence) to
//! [`Balancer::set_stat`], and asks [`Balancer::choose`] for each player. No sockets, no clock.
//!
//! A node's stats are the WCS `key=value` lines ([`parse_stat`]); rtcdn answers them with
//! [`render_stat`] (CPU figures from [`crate::cdn::cpu::CpuSampler`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::cdn::{BalanceMode, CdnConfig, CdnNode};

/// A node's load, as its `/?action=stat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeStat {
    /// `calls`: its sessions (publishers and players).
    pub calls: u64,
    /// `systemCpuLoad`: the host's CPU load, 0.0 to 1.0 (WCS: Java's getSystemCpuLoad).
    pub system_cpu_load: f64,
    /// `processCpuLoad`: the node process's share of the host's CPU, 0.0 to 1.0.
    pub process_cpu_load: f64,
}

/// Why a stats answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    /// No `calls=` line.
    #[error("node stats: no calls= line")]
    MissingCalls,
    /// A known key with a value that is not a number.
    #[error("node stats: {key}={value:?} is not a number")]
    BadValue { key: String, value: String },
}

/// Parses a node's `/?action=stat` answer: `key=value` lines (WCS also prints a few header lines
/// without `=`; they and unknown keys are ignored). `calls` is required; CPU loads default to 0.
pub fn parse_stat(text: &str) -> Result<NodeStat, StatError> {
    let mut calls = None;
    let mut stat = NodeStat::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = || StatError::BadValue {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        let load = || -> Result<f64, StatError> {
            let load: f64 = value.parse().map_err(|_| bad())?;
            if load.is_finite() {
                Ok(load)
            } else {
                Err(bad())
            }
        };
        match key {
            "calls" => calls = Some(value.parse::<u64>().map_err(|_| bad())?),
            "systemCpuLoad" => stat.system_cpu_load = load()?,
            "processCpuLoad" => stat.process_cpu_load = load()?,
            _ => {}
        }
    }
    stat.calls = calls.ok_or(StatError::MissingCalls)?;
    Ok(stat)
}

/// What a node answers at `/?action=stat` (`text/plain`): `calls`, `systemCpuLoad`,
/// `processCpuLoad`, `availableProcessors`, `streams` (published streams) and `players`, one
/// `key=value` line each.
pub fn render_stat(stat: &NodeStat, streams: usize, players: usize) -> String {
    let processors = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!(
        "calls={}\nsystemCpuLoad={:.4}\nprocessCpuLoad={:.4}\navailableProcessors={processors}\nstreams={streams}\nplayers={players}\n",
        stat.calls, stat.system_cpu_load, stat.process_cpu_load
    )
}

/// What is known of a node.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    /// Not polled yet: taken as answering with no load.
    Unknown,
    /// Its last poll answered this.
    Answering(NodeStat),
    /// Its last poll failed: skipped until it answers again.
    Silent,
}

/// Picks edges for players over the nodes of a `[cdn]` config.
#[derive(Debug)]
pub struct Balancer {
    nodes: Vec<CdnNode>,
    health: Vec<Health>,
    /// Players sent to each node since its last stats: added to its calls so that a burst of
    /// players between two polls is spread instead of all going to one node.
    sent_since_stat: Vec<u64>,
    mode: BalanceMode,
    randomize: bool,
    /// Round robin: the index to try first.
    next: usize,
    rng: StdRng,
}

impl Balancer {
    /// A balancer over `config.nodes`, by `config.mode`; `seed` seeds the random choices.
    pub fn new(config: &CdnConfig, seed: u64) -> Balancer {
        let n = config.nodes.len();
        Balancer {
            nodes: config.nodes.clone(),
            health: vec![Health::Unknown; n],
            sent_since_stat: vec![0; n],
            mode: config.mode,
            randomize: config.randomize,
            next: 0,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// The nodes, in config order.
    pub fn nodes(&self) -> &[CdnNode] {
        &self.nodes
    }

    /// Records the result of polling `node_id`: its stats, or `None` when it did not answer
    /// (the node is then skipped by every mode until it answers again). Unknown ids are ignored.
    pub fn set_stat(&mut self, node_id: u32, stat: Option<NodeStat>) {
        let Some(i) = self.nodes.iter().position(|n| n.id == node_id) else {
            return;
        };
        self.health[i] = match stat {
            Some(stat) => Health::Answering(stat),
            None => Health::Silent,
        };
        self.sent_since_stat[i] = 0;
    }

    /// The last stats of `node_id`, if its last poll answered.
    pub fn stat(&self, node_id: u32) -> Option<&NodeStat> {
        let i = self.nodes.iter().position(|n| n.id == node_id)?;
        match &self.health[i] {
            Health::Answering(stat) => Some(stat),
            _ => None,
        }
    }

    /// Whether `node_id` can be chosen: it answered its last poll or was never polled.
    pub fn is_answering(&self, node_id: u32) -> bool {
        self.nodes
            .iter()
            .position(|n| n.id == node_id)
            .is_some_and(|i| self.health[i] != Health::Silent)
    }

    /// The edge for the next player, by the mode; `None` when no node answers.
    pub fn choose(&mut self) -> Option<&CdnNode> {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.health[i] != Health::Silent)
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match self.mode {
            BalanceMode::RoundRobin => {
                let n = self.nodes.len();
                let chosen = (0..n)
                    .map(|k| (self.next + k) % n)
                    .find(|i| self.health[*i] != Health::Silent)
                    .expect("a candidate exists");
                self.next = (chosen + 1) % n;
                chosen
            }
            BalanceMode::Random => candidates[self.rng.gen_range(0..candidates.len())],
            BalanceMode::FewestCalls => self.pick_min(&candidates, |b, i| (0.0, b.calls(i))),
            BalanceMode::LessLoaded => self.pick_min(&candidates, |b, i| (b.cpu(i), b.calls(i))),
        };
        self.sent_since_stat[chosen] += 1;
        Some(&self.nodes[chosen])
    }

    /// The node's calls as last reported, plus the players sent to it since.
    fn calls(&self, i: usize) -> u64 {
        let reported = match self.health[i] {
            Health::Answering(stat) => stat.calls,
            _ => 0,
        };
        reported.saturating_add(self.sent_since_stat[i])
    }

    /// The node's system CPU load as last reported (0 when never polled).
    fn cpu(&self, i: usize) -> f64 {
        match self.health[i] {
            Health::Answering(stat) => stat.system_cpu_load,
            _ => 0.0,
        }
    }

    /// The candidate with the lowest key; ties go to the first in config order, or to a random
    /// one of them when `randomize` is set.
    fn pick_min(
        &mut self,
        candidates: &[usize],
        key: impl Fn(&Balancer, usize) -> (f64, u64),
    ) -> usize {
        let keys: Vec<(f64, u64)> = candidates.iter().map(|&i| key(self, i)).collect();
        let best = keys
            .iter()
            .copied()
            .reduce(|a, b| {
                if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                    b
                } else {
                    a
                }
            })
            .expect("a candidate exists");
        let tied: Vec<usize> = candidates
            .iter()
            .zip(&keys)
            .filter(|(_, k)| **k == best)
            .map(|(&i, _)| i)
            .collect();
        if self.randomize && tied.len() > 1 {
            tied[self.rng.gen_range(0..tied.len())]
        } else {
            tied[0]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: BalanceMode, n: u32) -> CdnConfig {
        CdnConfig {
            load_balancing_enabled: true,
            mode,
            nodes: (1..=n)
                .map(|id| CdnNode {
                    id,
                    host: format!("edge{id}"),
                    ws: Some(8080),
                    wss: None,
                    rtmp: None,
                })
                .collect(),
            ..CdnConfig::default()
        }
    }

    fn stat(calls: u64, cpu: f64) -> Option<NodeStat> {
        Some(NodeStat {
            calls,
            system_cpu_load: cpu,
            process_cpu_load: 0.0,
        })
    }

    fn picks(balancer: &mut Balancer, n: usize) -> Vec<u32> {
        (0..n)
            .map(|_| balancer.choose().map_or(0, |node| node.id))
            .collect()
    }

    #[test]
    fn round_robin_skips_silent_nodes() {
        let mut b = Balancer::new(&config(BalanceMode::RoundRobin, 3), 1);
        assert_eq!(picks(&mut b, 4), vec![1, 2, 3, 1]);
        b.set_stat(2, None);
        assert!(!b.is_answering(2));
        assert_eq!(picks(&mut b, 4), vec![3, 1, 3, 1]);
        b.set_stat(2, stat(100, 0.9));
        assert!(b.is_answering(2));
        assert_eq!(picks(&mut b, 3), vec![2, 3, 1]);
    }

    #[test]
    fn all_silent_is_none() {
        for mode in [
            BalanceMode::RoundRobin,
            BalanceMode::FewestCalls,
            BalanceMode::Random,
            BalanceMode::LessLoaded,
        ] {
            let mut b = Balancer::new(&config(mode, 2), 7);
            b.set_stat(1, None);
            b.set_stat(2, None);
            assert!(b.choose().is_none(), "{mode:?}");
            b.set_stat(2, stat(0, 0.0));
            assert_eq!(b.choose().map(|n| n.id), Some(2), "{mode:?}");
        }
        assert!(Balancer::new(&config(BalanceMode::RoundRobin, 0), 0)
            .choose()
            .is_none());
    }

    #[test]
    fn fewest_calls_picks_the_minimum() {
        let mut b = Balancer::new(&config(BalanceMode::FewestCalls, 3), 1);
        b.set_stat(1, stat(5, 0.1));
        b.set_stat(2, stat(2, 0.9));
        b.set_stat(3, stat(4, 0.0));
        assert_eq!(b.choose().unwrap().id, 2);
        // Players sent since the last poll count (node 2 now has 3); ties go to the first.
        assert_eq!(picks(&mut b, 4), vec![2, 2, 3, 1]);
        b.set_stat(2, None);
        assert_eq!(b.choose().unwrap().id, 3);
        // A fresh poll resets the count.
        b.set_stat(1, stat(0, 0.0));
        assert_eq!(b.choose().unwrap().id, 1);
    }

    #[test]
    fn fewest_calls_ties_first_or_random() {
        let mut b = Balancer::new(&config(BalanceMode::FewestCalls, 3), 1);
        for id in 1..=3 {
            b.set_stat(id, stat(0, 0.0));
        }
        assert_eq!(b.choose().unwrap().id, 1);
        let mut seen = std::collections::HashSet::new();
        let mut cfg = config(BalanceMode::FewestCalls, 3);
        cfg.randomize = true;
        for seed in 0..32 {
            let mut b = Balancer::new(&cfg, seed);
            for id in 1..=3 {
                b.set_stat(id, stat(0, 0.0));
            }
            seen.insert(b.choose().unwrap().id);
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn less_loaded_picks_the_lowest_cpu() {
        let mut b = Balancer::new(&config(BalanceMode::LessLoaded, 3), 1);
        b.set_stat(1, stat(0, 0.7));
        b.set_stat(2, stat(50, 0.2));
        b.set_stat(3, stat(1, 0.5));
        assert_eq!(picks(&mut b, 2), vec![2, 2]);
        b.set_stat(2, None);
        assert_eq!(b.choose().unwrap().id, 3);
        // Equal CPU: fewer calls wins.
        b.set_stat(1, stat(3, 0.5));
        b.set_stat(3, stat(2, 0.5));
        assert_eq!(b.choose().unwrap().id, 3);
        assert_eq!(b.stat(1), stat(3, 0.5).as_ref());
        assert_eq!(b.stat(2), None);
    }

    #[test]
    fn random_only_picks_answering_nodes_and_reaches_them_all() {
        let mut b = Balancer::new(&config(BalanceMode::Random, 4), 42);
        b.set_stat(3, None);
        let chosen = picks(&mut b, 200);
        assert!(!chosen.contains(&3));
        for id in [1, 2, 4] {
            assert!(chosen.contains(&id), "{id} never chosen");
        }
        // Same seed, same choices.
        let mut again = Balancer::new(&config(BalanceMode::Random, 4), 42);
        again.set_stat(3, None);
        assert_eq!(picks(&mut again, 200), chosen);
    }

    #[test]
    fn set_stat_for_an_unknown_node_is_ignored() {
        let mut b = Balancer::new(&config(BalanceMode::RoundRobin, 1), 0);
        b.set_stat(9, None);
        assert_eq!(b.choose().unwrap().id, 1);
        assert_eq!(b.nodes().len(), 1);
    }

    #[test]
    fn stat_round_trip_and_wcs_answers() {
        let stat = NodeStat {
            calls: 17,
            system_cpu_load: 0.25,
            process_cpu_load: 0.125,
        };
        let text = render_stat(&stat, 3, 14);
        assert!(
            text.starts_with(
                "calls=17\nsystemCpuLoad=0.2500\nprocessCpuLoad=0.1250\navailableProcessors="
            ),
            "{text}"
        );
        assert!(text.ends_with("streams=3\nplayers=14\n"), "{text}");
        assert_eq!(parse_stat(&text).unwrap(), stat);
        // A WCS-style answer: header lines, unknown keys, CRLF, spaces.
        let wcs = "-----Connection Stats-----\r\nconnections=3\r\ncalls = 2\r\nsystemCpuLoad=0.00\r\nfreeMemory=100\r\n";
        assert_eq!(
            parse_stat(wcs).unwrap(),
            NodeStat {
                calls: 2,
                system_cpu_load: 0.0,
                process_cpu_load: 0.0
            }
        );
        assert_eq!(
            parse_stat("systemCpuLoad=0.5\n"),
            Err(StatError::MissingCalls)
        );
        assert_eq!(parse_stat(""), Err(StatError::MissingCalls));
        assert!(
            matches!(parse_stat("calls=-1"), Err(StatError::BadValue { key, .. }) if key == "calls")
        );
        assert!(
            matches!(parse_stat("calls=1\nsystemCpuLoad=NaN"), Err(StatError::BadValue { key, .. }) if key == "systemCpuLoad")
        );
    }
}
