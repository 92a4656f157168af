//! The files under `deploy/` are checked by the tools that read them.

use std::process::Command;

/// `systemd-analyze verify` takes the unit without a word, with the unit's binary path
/// pointing at the one just built. It prints problems and still exits 0, so its output must
/// be empty.
#[test]
fn the_systemd_unit_verifies() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is required under CI: ./scripts/test installs systemd"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    assert!(version.status.success());
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/systemd/tickflow.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("ExecStart=/usr/local/bin/tickflow run --config"));
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tickflow.service");
    let text = text.replace("/usr/local/bin/tickflow", env!("CARGO_BIN_EXE_tickflow"));
    std::fs::write(&copy, &text).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");

    // The check is real: a misspelt setting is reported.
    std::fs::write(&copy, text.replace("RestartSec=2", "RestartSec=two")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("Failed to parse") && said.contains("two"),
        "{said}"
    );
}
