//! `rtcdn --print-config` run as an operator runs it: the effective config (file, then flags)
//! comes out on stdout as TOML with the secrets redacted, and the exit code is 0.

use std::process::Command;

const JWT_SECRET: &str = "print-config-test-secret-0123456789abcdef";

fn print_config(args: &[&str]) -> toml::Table {
    let output = Command::new(env!("CARGO_BIN_EXE_rtcdn"))
        .args(args)
        .arg("--print-config")
        .output()
        .expect("rtcdn runs");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8 output");
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains(JWT_SECRET), "a secret leaked: {stdout}");
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("not TOML: {e}\n{stdout}"))
}

#[test]
fn prints_the_effective_config_with_cli_overrides_and_redacted_secrets() {
    let dir = std::env::temp_dir().join(format!("rtcdn-print-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(
        &file,
        format!("[http]\nlisten = \"127.0.0.1:8081\"\n[auth]\npublish = \"token\"\njwt_secret = \"{JWT_SECRET}\"\n"),
    )
    .unwrap();
    let config = print_config(&[
        "--config",
        file.to_str().unwrap(),
        "--http",
        "127.0.0.1:9123",
    ]);
    let _ = std::fs::remove_dir_all(&dir);
    // The flag wins over the file; the file over the defaults; defaults fill the rest.
    assert_eq!(config["http"]["listen"].as_str(), Some("127.0.0.1:9123"));
    assert_eq!(config["auth"]["publish"].as_str(), Some("token"));
    assert_eq!(config["auth"]["jwt_secret"].as_str(), Some("<redacted>"));
    assert_eq!(config["media"]["port_base"].as_integer(), Some(31000));
}

#[test]
fn prints_what_the_wcs_import_understood() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/wcs-example");
    let config = print_config(&["--wcs-config", dir, "--udp-port-base", "33000"]);
    let cdn = &config["cdn"];
    assert_eq!(cdn["load_balancing_enabled"].as_bool(), Some(true));
    assert_eq!(cdn["mode"].as_str(), Some("roundrobin"));
    assert_eq!(cdn["nodes"][0]["ws"].as_integer(), Some(8180));
    assert_eq!(cdn["secret"].as_str(), Some("<redacted>"));
    assert_eq!(config["media"]["port_base"].as_integer(), Some(33000));
}
