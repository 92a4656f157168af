//! What the binary gives a shell: completions, a manual page, and logs a machine can read.

use crate::support::{bin, config, run_ok};

#[test]
fn completions_and_the_manual_page_cover_every_command() {
    let bash = run_ok(&["completions", "bash"]);
    let zsh = run_ok(&["completions", "zsh"]);
    let man = run_ok(&["man"]);
    assert!(
        man.starts_with(".ie") || man.contains(".TH tickflow"),
        "{man}"
    );
    for command in ["demo", "run", "sql", "status", "backfill", "completions"] {
        assert!(bash.contains(command), "bash completion lacks {command}");
        assert!(zsh.contains(command), "zsh completion lacks {command}");
        assert!(man.contains(command), "the manual page lacks {command}");
    }
    assert!(bash.contains("--log-format"), "global flags complete too");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfg = dir.path().join("run.toml");
    std::fs::write(&cfg, config(&data, "")).unwrap();
    let out = bin()
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--duration",
            "1",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["message"] == "stopping" && l["reason"].is_string()),
        "{stderr}"
    );
}
