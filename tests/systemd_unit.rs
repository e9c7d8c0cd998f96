//! `config/rtcdn.service` is a unit systemd accepts: `systemd-analyze verify` on it, with
//! ExecStart pointing at the binary just built and the example config. Skipped (with a message)
//! where systemd-analyze is missing.

use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/config/rtcdn.service")).unwrap();
    let exec = format!(
        "ExecStart={} --config {root}/config/standalone.toml",
        env!("CARGO_BIN_EXE_rtcdn")
    );
    assert!(unit.contains("ExecStart=/usr/local/bin/rtcdn --config /etc/rtcdn/rtcdn.toml"));
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/rtcdn --config /etc/rtcdn/rtcdn.toml",
        &exec,
    );
    let dir = std::env::temp_dir().join(format!("rtcdn-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rtcdn.service");
    std::fs::write(&path, unit).unwrap();
    let output = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: systemd-analyze not available ({e})");
            return;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze: {stderr}");
    assert!(
        !stderr.contains("rtcdn.service"),
        "systemd-analyze complains about the unit: {stderr}"
    );
}
