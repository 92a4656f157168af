//! A short fuzz run of every target: each seed, each saved regression input, then mutated
//! seeds, without coverage feedback (that is cargo-fuzz's job, in `fuzz/`). A panic is a
//! finding: its input is saved under the target directory and the test fails naming it.
//!
//! `TICKFLOW_FUZZ_ITERS` sets the mutated inputs per target (default 20,000; 3,000 for targets
//! that write a file per input), `TICKFLOW_FUZZ_SEED` the generator's seed.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Instant;

use tickflow_fuzz::{Rng, Target, mutate};

/// Inputs that once made a target panic, kept as regression tests: `regressions/<target>/`.
fn regressions(target: Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target.name());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Runs `target` on `input`; on a panic, saves the input and returns where.
fn run_one(target: Target, input: &[u8], label: &str) -> Result<(), String> {
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| target.run(input)));
    if outcome.is_ok() {
        return Ok(());
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/fuzz-findings")
        .join(target.name());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{label}.bin"));
    std::fs::write(&path, input).unwrap();
    Err(format!(
        "{} panicked on {} ({} bytes, starting {:?}); copy it to regressions/{}/ once fixed",
        target.name(),
        path.display(),
        input.len(),
        String::from_utf8_lossy(&input[..input.len().min(80)]),
        target.name()
    ))
}

fn iterations(target: Target) -> usize {
    let file_based = matches!(
        target,
        Target::LogSegment
            | Target::Checkpoint
            | Target::ReplayCsv
            | Target::ReplayNdjson
            | Target::Dbn
    );
    std::env::var("TICKFLOW_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if file_based { 3_000 } else { 20_000 })
}

#[test]
fn every_parser_survives_mutated_input() {
    let seed = std::env::var("TICKFLOW_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    // Findings are reported together; the panics' own messages go to stderr as they happen.
    let mut findings = Vec::new();
    for target in Target::ALL {
        let started = Instant::now();
        let seeds = target.seeds();
        assert!(!seeds.is_empty(), "{} has no seeds", target.name());
        for (i, input) in seeds.iter().enumerate() {
            if let Err(e) = run_one(target, input, &format!("seed-{i}")) {
                findings.push(e);
            }
        }
        for (path, input) in regressions(target) {
            let label = path.file_stem().unwrap().to_string_lossy().into_owned();
            if let Err(e) = run_one(target, &input, &label) {
                findings.push(e);
            }
        }
        let mut rng = Rng::new(seed ^ target as u64);
        let n = iterations(target);
        for i in 0..n {
            let base = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, base, other);
            if let Err(e) = run_one(target, &input, &format!("seed{seed:x}-{i}")) {
                findings.push(e);
                break;
            }
        }
        println!(
            "fuzz {}: {} seeds, {} mutated inputs in {:.1} s",
            target.name(),
            seeds.len(),
            n,
            started.elapsed().as_secs_f64()
        );
        if target == Target::Pgwire {
            println!(
                "fuzz pgwire: {} decoder panics contained (pgwire's; see pgwire_messages)",
                tickflow_fuzz::PGWIRE_CONTAINED.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    assert!(findings.is_empty(), "findings:\n{}", findings.join("\n"));
}

/// The default seed: fixed, so a run repeats; change it with `TICKFLOW_FUZZ_SEED`.
const DEFAULT_SEED: u64 = 0x7_1c4f_10e5;
