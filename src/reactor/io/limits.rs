//! The process's resource limits the node checks its configuration against.

/// The soft limit on open files (`ulimit -n`); `None` when it is unlimited or cannot be read.
pub fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// Raises the soft limit on open files to `needed` (no further than the hard limit) when it is
/// lower, as Go's runtime does at start: distributions default to 1024, below what a node's
/// HTTP and ICE-TCP connection caps allow. Returns the soft limit in force afterwards (`None`:
/// unlimited or unreadable).
pub fn raise_open_file_limit(needed: u64) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    if limit.rlim_cur >= needed {
        return Some(limit.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: needed.min(limit.rlim_max),
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct it is given; a soft limit at or below the hard one
    // needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Some(limit.rlim_cur);
    }
    Some(raised.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_rises_to_what_is_needed_within_the_hard_one() {
        let Some(before) = open_file_limit() else {
            return; // unlimited: nothing to raise
        };
        assert_eq!(raise_open_file_limit(3), Some(before), "never lowered");
        let now = raise_open_file_limit(before + 1).unwrap();
        assert!(now >= before);
        assert_eq!(open_file_limit(), Some(now));
    }

    #[test]
    fn a_process_may_open_its_standard_files() {
        assert!(open_file_limit().is_none_or(|n| n >= 3));
    }
}
