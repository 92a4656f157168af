use crate::support::{run, run_ok};

#[test]
fn every_example_config_passes_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("config dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = run_ok(&["check", "--config", path.to_str().unwrap()]);
            assert!(out.contains(": ok"), "{out}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "expected the example configs, found {checked}"
    );
}

#[test]
fn check_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[http]\nport = 70000\n\n[[alerts.threshold]]\nname = \"x\"\nsymbol = \"NV DA\"\ncondition = \"price => 3\"\n").unwrap();
    let out = run(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for needle in [
        format!("{file}:2: http.port"),
        format!("{file}:6: alerts.threshold[0].symbol"),
        format!("{file}:7: alerts.threshold[0].condition"),
        "3 problem(s) found".to_string(),
    ] {
        assert!(err.contains(&needle), "{needle:?} not in:\n{err}");
    }
}
