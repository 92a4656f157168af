//! `tickflow produce` writing to a file: the same seeded ticks other loaders read.

use crate::support::bin;

#[test]
fn produce_writes_the_same_seeded_ticks_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let read = |name: &str| {
        let path = dir.path().join(name);
        let out = bin()
            .args([
                "produce",
                "--count",
                "25",
                "--batch-size",
                "10",
                "--seed",
                "3",
                "--to",
            ])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let a = read("a.ndjson");
    assert_eq!(a.len(), 25);
    assert_eq!(a[24]["seq"], 24);
    assert_eq!(a[0]["type"], "trade");
    // Same seed, same prices and sizes; only the timestamps differ between runs.
    let strip = |v: &[serde_json::Value]| -> Vec<(String, String)> {
        v.iter()
            .map(|t| (t["price"].to_string(), t["size"].to_string()))
            .collect()
    };
    assert_eq!(strip(&a), strip(&read("b.ndjson")));
}

#[test]
fn produce_refuses_an_address_without_a_scheme() {
    let out = bin()
        .args(["produce", "--count", "1", "--to", "127.0.0.1:8750"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("http://127.0.0.1:8750"), "{err}");
    assert!(!std::path::Path::new("127.0.0.1:8750").exists());
}
