//! Records the git revision the binary is built from, for `rtcdn --version` and the
//! `rtcdn_build_info` metric: `RTCDN_GIT_REVISION` when the build names it (a container build
//! has no `.git`), else git's; "unknown" outside a git checkout (a source tarball).

use std::process::Command;

fn main() {
    // A build without a checkout (a container's context, a tarball) may name it instead.
    println!("cargo:rerun-if-env-changed=RTCDN_GIT_REVISION");
    if let Some(given) = std::env::var("RTCDN_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown")
    {
        println!("cargo:rustc-env=RTCDN_GIT_REVISION={given}");
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    // --no-optional-locks: a status that refreshed (rewrote) the index would make the next
    // build see the index changed and run this again.
    let dirty = Command::new("git")
        .args([
            "--no-optional-locks",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let suffix = if dirty { "-modified" } else { "" };
    println!("cargo:rustc-env=RTCDN_GIT_REVISION={revision}{suffix}");
    // Rebuilt when HEAD moves (a commit, a checkout), not on every source change. Where git
    // keeps them: in a linked worktree `.git` is a file and they live elsewhere, and a path that
    // does not exist would make cargo run this (and rebuild the crate) on every build.
    for name in ["HEAD", "index"] {
        let path = Command::new("git")
            .args(["rev-parse", "--git-path", name])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned());
        if let Some(path) = path.filter(|p| std::path::Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
