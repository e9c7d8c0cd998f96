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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_may_open_its_standard_files() {
        assert!(open_file_limit().is_none_or(|n| n >= 3));
    }
}
