//! CPU load for a node's stats (`systemCpuLoad`, `processCpuLoad` in [`super::balancer::render_stat`]),
//! from `/proc/stat` and `/proc/self/stat` deltas between two calls. Not sans-IO: it reads
//! `/proc`, and is kept apart from the [`super::balancer::Balancer`].

use super::balancer::NodeStat;

/// Samples the host's and this process's CPU load. Each figure is the load between the previous
/// call (or [`CpuSampler::new`]) and this one, from 0.0 to 1.0 of the whole host, like Java's
/// `getSystemCpuLoad` and `getProcessCpuLoad` that WCS reports. Without `/proc`, 0.0.
#[derive(Debug, Clone, Default)]
pub struct CpuSampler {
    /// `/proc/stat` (total, idle) jiffies at the last system sample.
    system: Option<(u64, u64)>,
    /// `/proc/stat` total and this process's utime+stime at the last process sample.
    process: Option<(u64, u64)>,
}

impl CpuSampler {
    /// A sampler whose first figures cover the time since now.
    pub fn new() -> CpuSampler {
        let total = read_host();
        CpuSampler {
            system: total,
            process: total
                .zip(read_process())
                .map(|((total, _), own)| (total, own)),
        }
    }

    /// The host's CPU load since the last call.
    pub fn system_cpu_load(&mut self) -> f64 {
        let Some(now) = read_host() else { return 0.0 };
        let load = self.system.map_or(0.0, |before| system_load(before, now));
        self.system = Some(now);
        load
    }

    /// This process's share of the host's CPU since the last call.
    pub fn process_cpu_load(&mut self) -> f64 {
        let (Some((total, _)), Some(own)) = (read_host(), read_process()) else {
            return 0.0;
        };
        let load = self
            .process
            .map_or(0.0, |before| process_load(before, (total, own)));
        self.process = Some((total, own));
        load
    }

    /// Both loads, with `calls`, as a node's stats.
    pub fn stat(&mut self, calls: u64) -> NodeStat {
        NodeStat {
            calls,
            system_cpu_load: self.system_cpu_load(),
            process_cpu_load: self.process_cpu_load(),
        }
    }
}

fn read_host() -> Option<(u64, u64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn read_process() -> Option<u64> {
    parse_proc_self_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn system_load((total0, idle0): (u64, u64), (total1, idle1): (u64, u64)) -> f64 {
    let total = total1.saturating_sub(total0);
    let idle = idle1.saturating_sub(idle0);
    if total == 0 {
        return 0.0;
    }
    (total.saturating_sub(idle) as f64 / total as f64).clamp(0.0, 1.0)
}

fn process_load((total0, own0): (u64, u64), (total1, own1): (u64, u64)) -> f64 {
    let total = total1.saturating_sub(total0);
    if total == 0 {
        return 0.0;
    }
    (own1.saturating_sub(own0) as f64 / total as f64).clamp(0.0, 1.0)
}

/// (total, idle) jiffies from the aggregate `cpu` line of `/proc/stat`: user, nice, system, idle,
/// iowait, irq, softirq, steal (guest time is already in user). Idle counts iowait.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if fields.len() < 4 {
        return None;
    }
    let total = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total, idle))
}

/// utime + stime (clock ticks, the unit of `/proc/stat`) from `/proc/self/stat`. The command
/// name in parentheses may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_proc_self_stat(text: &str) -> Option<u64> {
    let after = &text[text.rfind(')')? + 1..];
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_parsing() {
        let text = "cpu  100 5 50 800 20 3 2 0 7 0\ncpu0 50 2 25 400 10 1 1 0 0 0\nintr 1 2 3\n";
        assert_eq!(parse_proc_stat(text), Some((980, 820)));
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        let own = "1234 (rt cdn) (x)) S 1 1234 1234 0 -1 4194304 500 0 0 0 70 30 0 0 20 0 9 0 100 1000 50";
        assert_eq!(parse_proc_self_stat(own), Some(100));
        assert_eq!(parse_proc_self_stat("1234 (x) S 1"), None);
    }

    #[test]
    fn loads_are_fractions() {
        assert_eq!(system_load((1000, 800), (2000, 1550)), 0.25);
        assert_eq!(system_load((1000, 800), (1000, 800)), 0.0);
        assert_eq!(process_load((1000, 10), (2000, 110)), 0.1);
        assert_eq!(process_load((2000, 10), (1000, 110)), 0.0);
    }

    #[test]
    fn the_sampler_reads_proc() {
        let mut sampler = CpuSampler::new();
        // Burn a little CPU so the deltas are not all zero on a fast machine.
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let stat = sampler.stat(4);
        assert_eq!(stat.calls, 4);
        assert!((0.0..=1.0).contains(&stat.system_cpu_load), "{stat:?}");
        assert!((0.0..=1.0).contains(&stat.process_cpu_load), "{stat:?}");
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(read_host().is_some() && read_process().is_some());
        }
    }
}
