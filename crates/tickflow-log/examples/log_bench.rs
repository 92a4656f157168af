//! Durable append rate of the log against the disk's own fsync'd sequential write rate for the
//! same bytes, measured back to back in one process. `bench/run` calls it; the figures print
//! as one JSON object.
//!
//! ```text
//! cargo run --release -p tickflow-log --example log_bench -- DIR [RECORDS] [RECORD_BYTES] [BATCH] [PRODUCERS]
//! ```
//!
//! The disk baseline writes the bytes the log wrote, sequentially to one file, twice: in
//! 4 MiB chunks with an `fdatasync` after each (the most a durable sequential writer gets
//! from this disk) and in chunks the size of the log's average group commit (the same fsync
//! cadence, so the difference is the log's own overhead).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tickflow_log::{Log, LogConfig};

struct Args {
    dir: PathBuf,
    records: u64,
    record_bytes: usize,
    batch: usize,
    producers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let dir = it
        .next()
        .ok_or("usage: log_bench DIR [RECORDS] [RECORD_BYTES] [BATCH] [PRODUCERS]")?;
    let mut num = |name: &str, default: u64| -> Result<u64, String> {
        match it.next() {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| format!("{name} must be a positive integer, got {s:?}")),
        }
    };
    let args = Args {
        dir: PathBuf::from(dir),
        records: num("RECORDS", 4_000_000)?,
        record_bytes: num("RECORD_BYTES", 64)? as usize,
        batch: num("BATCH", 8192)? as usize,
        producers: num("PRODUCERS", 1)? as usize,
    };
    if args.records == 0 || args.record_bytes == 0 || args.batch == 0 || args.producers == 0 {
        return Err("every count must be at least 1".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("log_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    // The disk's limit first, from a quiet start, then the log, then the disk at the log's
    // cadence: each phase starts after `sync`, so none pays for another's writeback.
    let bytes_hint = args.records * (args.record_bytes as u64 + 8);
    let disk_path = args.dir.join("disk-baseline");
    quiesce();
    let disk_4m = durable_sequential_write(&disk_path, bytes_hint, 4 << 20)?;
    let log_dir = args.dir.join("log");
    let _ = std::fs::remove_dir_all(&log_dir);
    let log = Arc::new(Log::open(LogConfig::new(&log_dir))?);
    let per_producer = args.records / args.producers as u64;
    quiesce();
    let started = Instant::now();
    let workers: Vec<_> = (0..args.producers)
        .map(|p| {
            let log = Arc::clone(&log);
            let (batch, bytes) = (args.batch, args.record_bytes);
            std::thread::spawn(move || -> tickflow_log::Result<()> {
                // Distinct, incompressible-looking payloads: the disk sees real bytes.
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ p as u64;
                let records: Vec<Vec<u8>> = (0..batch)
                    .map(|_| {
                        (0..bytes)
                            .map(|_| {
                                state ^= state << 13;
                                state ^= state >> 7;
                                state ^= state << 17;
                                state as u8
                            })
                            .collect()
                    })
                    .collect();
                let mut left = per_producer;
                while left > 0 {
                    let n = (batch as u64).min(left) as usize;
                    log.append_batch(&records[..n])?;
                    left -= n as u64;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().map_err(|_| "a producer panicked")??;
    }
    let log_secs = started.elapsed().as_secs_f64();
    let stats = log.stats();
    drop(log);
    let bytes = stats.bytes_written;
    let group = (bytes / stats.fsyncs.max(1)).max(1) as usize;
    quiesce();
    let disk_same = durable_sequential_write(&disk_path, bytes, group)?;
    let _ = std::fs::remove_file(&disk_path);
    let _ = std::fs::remove_dir_all(&log_dir);
    let records = stats.records_appended;
    println!(
        "{{\"records\":{records},\"record_bytes\":{},\"batch\":{},\"producers\":{},\
         \"bytes\":{bytes},\"fsyncs\":{},\"log_seconds\":{log_secs},\
         \"log_records_per_second\":{},\"log_bytes_per_second\":{},\
         \"disk_4mib_bytes_per_second\":{},\"disk_same_chunks_bytes_per_second\":{},\
         \"group_commit_bytes\":{group}}}",
        args.record_bytes,
        args.batch,
        args.producers,
        stats.fsyncs,
        records as f64 / log_secs,
        bytes as f64 / log_secs,
        bytes_hint as f64 / disk_4m,
        bytes as f64 / disk_same,
    );
    Ok(())
}

/// Flushes every dirty page of the machine and lets the disk settle.
fn quiesce() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(std::time::Duration::from_millis(500));
}

/// Seconds to write `bytes` sequentially to a new file at `path` in `chunk`-sized writes,
/// each followed by `fdatasync`, as an append-only log that acknowledges after fsync does.
fn durable_sequential_write(path: &Path, bytes: u64, chunk: usize) -> std::io::Result<f64> {
    let _ = std::fs::remove_file(path);
    let mut file: File = OpenOptions::new().create_new(true).write(true).open(path)?;
    // Pseudo-random bytes like the log's records, so a compressing filesystem gains nothing.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let buf: Vec<u8> = (0..chunk)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let started = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = (chunk as u64).min(left) as usize;
        file.write_all(&buf[..n])?;
        file.sync_data()?;
        left -= n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path)?;
    Ok(secs)
}
