//! Crash test: a child process (this test binary, re-executed) appends as fast as it can and
//! prints each acknowledged sequence number; the parent SIGKILLs it at a random moment,
//! reopens the log and checks that every acknowledged record is there, in order, exactly once,
//! and that nothing corrupt is returned. Rounds continue in the same directory, so recovery
//! followed by more appends (and segment rolls) is exercised too.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tickflow_log::{Log, LogConfig};

use crate::XorShift;

/// When set (to a directory), [`child_appends_until_killed`] acts as the child.
const CHILD_ENV: &str = "TICKFLOW_LOG_CRASH_CHILD";
const CHILD_TEST: &str = "crash::child_appends_until_killed";
const CONSUMER: &str = "crash-checker";
const ROUNDS: u64 = 24;

fn crash_config(dir: &Path) -> LogConfig {
    let mut config = LogConfig::new(dir);
    config.segment_bytes = 64 << 10; // rolls every ~1000 records, so kills land mid-roll too
    config
}

/// Appender threads in the child, so that kills also land in the middle of group commits.
const WRITERS: usize = 3;

/// `[writer u8][seq u64 LE][filler, length derived from seq][crc32 of all before, u32 LE]`.
/// `seq` counts that writer's records.
fn encode(writer: u8, seq: u64) -> Vec<u8> {
    let mut bytes = vec![writer];
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend((0..(seq + u64::from(writer)) % 97).map(|i| (seq as u8) ^ (i as u8)));
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// (writer, seq), if the payload is intact.
fn decode(bytes: &[u8]) -> Option<(usize, u64)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    let writer = *body.first()?;
    let seq = u64::from_le_bytes(body.get(1..9)?.try_into().ok()?);
    let crc_ok = crc32fast::hash(body).to_le_bytes() == crc;
    let len_ok = body.len() == 9 + ((seq + u64::from(writer)) % 97) as usize;
    (crc_ok && len_ok && usize::from(writer) < WRITERS).then_some((usize::from(writer), seq))
}

/// Reads the whole log, checking offsets are contiguous, every payload is intact and each
/// writer's sequence numbers run 0, 1, 2, ... without gap or repeat. Returns, per writer, the
/// next sequence number (how many of its records are stored).
fn check_log(log: &Log, context: &str) -> [u64; WRITERS] {
    let next = log.next_offset();
    let mut expected = [0u64; WRITERS];
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < next {
        log.read(offset, 4096, &mut out)
            .unwrap_or_else(|e| panic!("{context}: read at {offset}: {e}"));
        assert!(
            !out.is_empty(),
            "{context}: empty read at {offset} < {next}"
        );
        for (o, bytes) in &out {
            assert_eq!(*o, offset, "{context}: offsets must be contiguous");
            let (writer, seq) =
                decode(bytes).unwrap_or_else(|| panic!("{context}: corrupt payload at offset {o}"));
            assert_eq!(
                seq, expected[writer],
                "{context}: writer {writer} has a gap or repeat at offset {o}"
            );
            expected[writer] += 1;
            offset += 1;
        }
    }
    expected
}

/// The child. A no-op in a normal test run.
#[test]
fn child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let log = Log::open(crash_config(Path::new(&dir))).expect("child: open");
    // Resume after each writer's last stored sequence number, found by reading the records
    // themselves: a lost or repeated record would then show as a gap or repeat.
    let resume = check_log(&log, "child");
    let deadline = Instant::now() + Duration::from_secs(20); // in case the parent is gone
    thread::scope(|s| {
        for (writer, first_seq) in resume.into_iter().enumerate() {
            let log = log.clone();
            s.spawn(move || {
                let mut seq = first_seq;
                let mut rng =
                    XorShift::new((seq + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ writer as u64);
                let mut batches = 0u64;
                while Instant::now() < deadline {
                    let n = rng.range(1, 200);
                    let records: Vec<Vec<u8>> =
                        (seq..seq + n).map(|q| encode(writer as u8, q)).collect();
                    log.append_batch(&records).expect("child: append");
                    seq += n;
                    batches += 1;
                    let mut line = format!("ACK {writer} {}\n", seq - 1);
                    if writer == 0 && batches.is_multiple_of(8) {
                        let next = log.next_offset();
                        log.commit_offset(CONSUMER, next).expect("child: commit");
                        line.push_str(&format!("COMMIT {next}\n"));
                    }
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

#[test]
fn acknowledged_records_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let exe = std::env::current_exe().expect("current_exe");
    let mut rng = XorShift::new(0x71CF_10A5);
    let mut acked: [Option<u64>; WRITERS] = [None; WRITERS];
    let mut total_acks = 0u64;
    let mut committed: Option<u64> = None;
    let mut stored = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        let mut stderr = child.stderr.take().expect("child stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        let mut lines = Vec::new();
        if round % 3 == 2 {
            // Kill at a random moment from spawn: sometimes during open and recovery.
            thread::sleep(Duration::from_millis(rng.range(0, 25)));
        } else {
            // Wait until appends are flowing, then kill a random moment later.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !lines.iter().any(|l: &String| l.starts_with("ACK ")) {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => lines.push(line),
                    Err(_) => break,
                }
            }
            if round == 0 {
                // The running child holds the directory: a second process cannot open it.
                assert!(matches!(
                    Log::open(crash_config(dir.path())),
                    Err(tickflow_log::Error::Locked { .. })
                ));
            }
            thread::sleep(Duration::from_millis(rng.range(5, 40)));
        }
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("wait child");
        reader.join().expect("stdout reader");
        let stderr_text = errors.join().expect("stderr reader");
        lines.extend(rx.try_iter());
        let progressed = lines.iter().any(|l| l.starts_with("ACK "));
        assert!(
            round % 3 == 2 || progressed,
            "round {round}: child made no progress ({status}); stderr:\n{stderr_text}"
        );
        assert!(
            !stderr_text.contains("panicked"),
            "round {round}: child panicked:\n{stderr_text}"
        );
        for line in &lines {
            let mut words = line.split(' ');
            if words.next() == Some("ACK")
                && let (Some(Ok(writer)), Some(Ok(seq))) = (
                    words.next().map(str::parse::<usize>),
                    words.next().map(str::parse::<u64>),
                )
            {
                acked[writer] = acked[writer].max(Some(seq));
                total_acks += 1;
            }
            if let Some(n) = line.strip_prefix("COMMIT ").and_then(|n| n.parse().ok()) {
                committed = committed.max(Some(n));
            }
        }
        stored = verify(dir.path(), acked, committed, round);
    }
    eprintln!(
        "crash test: {ROUNDS} rounds, {total_acks} acknowledged batches, {} records stored, {:.2?}",
        stored,
        started.elapsed()
    );
}

/// Reopens the log (running recovery) and checks the invariants; returns the record count.
fn verify(dir: &Path, acked: [Option<u64>; WRITERS], committed: Option<u64>, round: u64) -> u64 {
    let log = Log::open(crash_config(dir)).expect("parent: reopen after kill");
    let context = format!("round {round}");
    let stored = check_log(&log, &context);
    for (writer, (acked, stored)) in acked.iter().zip(stored).enumerate() {
        if let Some(acked) = *acked {
            assert!(
                stored > acked,
                "{context}: writer {writer} acknowledged up to {acked} but only {stored} stored"
            );
        }
    }
    let next = log.next_offset();
    let on_disk = log.committed_offset(CONSUMER);
    assert!(
        on_disk >= committed,
        "{context}: committed {committed:?} but stored {on_disk:?}"
    );
    assert!(
        on_disk.is_none_or(|s| s <= next),
        "{context}: commit past the end"
    );
    next
}
