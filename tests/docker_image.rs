//! The container packaging where no Docker engine runs (this machine, most CI runners): the
//! smoke test of `scripts/docker_smoke.sh` must skip cleanly and say why, and the Dockerfile must
//! build what it ships (the `dist` binary) from a context without build output. Where an engine
//! answers, `scripts/test.sh` builds and runs the image itself.

use std::process::Command;

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[test]
fn the_smoke_test_skips_cleanly_without_a_docker_engine() {
    // A `docker` command whose engine does not answer, first on the PATH.
    let dir = std::env::temp_dir().join(format!("rtcdn-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fake = dir.join("docker");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg(format!("{}/scripts/docker_smoke.sh", root()))
        .env("PATH", path)
        .env_remove("SKIP_DOCKER")
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("docker info failed") && stdout.contains("skipping"),
        "{stdout}"
    );
}

#[test]
fn the_dockerfile_ships_the_dist_binary_and_names_the_io_uring_fallback() {
    let dockerfile = std::fs::read_to_string(format!("{}/Dockerfile", root())).unwrap();
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a runtime stage");
    assert!(dockerfile.contains("cargo build --locked --profile dist -p rtcdn"));
    assert!(dockerfile.contains("target/dist/rtcdn"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/rtcdn\"]"));
    assert!(dockerfile.contains("USER nonroot"));
    // The log line an operator sees in a default container, quoted as the node writes it.
    assert!(dockerfile.contains("seccomp"));
    assert!(dockerfile.contains("media socket falls back to recvmmsg/sendmmsg"));
    let reactor = std::fs::read_to_string(format!("{}/src/reactor/io/mod.rs", root())).unwrap();
    assert!(reactor.contains("media socket falls back to recvmmsg/sendmmsg"));
    let ignored = std::fs::read_to_string(format!("{}/.dockerignore", root())).unwrap();
    for path in [".git", "target", "fuzz/target", "**/node_modules"] {
        assert!(
            ignored.lines().any(|l| l == path),
            "{path} in .dockerignore"
        );
    }
}

/// The runtime image (distroless `cc`) is counted on for glibc and libgcc only: the binary (the
/// same native code as the `dist` one) must need no other shared library. The FDK AAC encoder
/// is C++, so this is where a libstdc++ or other native dependency would show first.
#[test]
fn the_binary_needs_only_what_the_runtime_image_has() {
    let dockerfile = std::fs::read_to_string(format!("{}/Dockerfile", root())).unwrap();
    assert!(
        dockerfile.contains("RUNTIME_IMAGE=gcr.io/distroless/cc-debian12"),
        "the runtime image changed: check the libraries below against it"
    );
    let output = match Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_rtcdn")])
        .output()
    {
        Ok(output) if output.status.success() => output,
        _ => {
            eprintln!("skipped: readelf (binutils) is not installed");
            return;
        }
    };
    let dynamic = String::from_utf8_lossy(&output.stdout);
    let needed: Vec<&str> = dynamic
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next())
        .collect();
    assert!(needed.contains(&"libc.so.6"), "{dynamic}");
    let in_the_image = [
        "libc.so.6",
        "libm.so.6",
        "libgcc_s.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "librt.so.1",
        "ld-linux-x86-64.so.2",
        "ld-linux-aarch64.so.1",
    ];
    let missing: Vec<&&str> = needed
        .iter()
        .filter(|lib| !in_the_image.contains(lib))
        .collect();
    assert!(missing.is_empty(), "not in the runtime image: {missing:?}");
}
