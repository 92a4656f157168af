#!/usr/bin/env python3
"""tickflow benchmarks side by side with the tools users run today, in one run on one machine.

`bench/run` calls this after building the release binary. Each suite measures tickflow and its
peers, returns rows, and keeps every run's raw figures; the report is written between the
markers in docs/BENCHMARKS.md and the raw runs to docs/benchmarks.json. Running some suites
replaces only their rows.

Adding a row: append `row(...)` in a suite (or write a suite and list it in SUITES).
"""

import contextlib
import datetime
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release", "tickflow")
LOG_BENCH = os.path.join(TARGET, "release", "examples", "log_bench")
WS_BENCH = os.path.join(TARGET, "release", "examples", "ws_bench")
REPORT = os.path.join(ROOT, "docs", "BENCHMARKS.md")
RAW = os.path.join(ROOT, "docs", "benchmarks.json")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

QUICK = os.environ.get("QUICK") == "1"
RUNS = int(os.environ.get("RUNS", "1" if QUICK else "3"))
SECONDS = int(os.environ.get("SECONDS_PER_RUN", "5" if QUICK else "20"))
PG_DSN = os.environ.get("PG_DSN", "host=127.0.0.1 port=5432 dbname=test user=postgres")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def row(suite, work, unit, tickflow, peer=None, peer_value=None, higher_is_better=True, runs=None, note=""):
    """One line of the report. `tickflow` and `peer_value` are medians; `runs` keeps the raw ones."""
    ratio = None
    if tickflow is not None and peer_value:
        ratio = tickflow / peer_value if higher_is_better else peer_value / tickflow
    return {
        "suite": suite,
        "work": work,
        "unit": unit,
        "tickflow": tickflow,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
        "higher_is_better": higher_is_better,
        "runs": runs or {},
        "note": note,
    }


# ---------------------------------------------------------------------------------------------
# Running tickflow


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path, data_dir, port, sim=None, thresholds=(), spikes=None, lake_flush_ms=1000, flush_rows=None, symbol_buckets=0, compact_secs=60, extra="", log_keys=None):
    """A pipeline config for one benchmark run; `sim` holds simulator keys, None for HTTP only;
    `log_keys` replace the embedded log's `[log]` keys (a broker log; a dict value is an
    inline table)."""
    def toml_value(v):
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [
        f'data_dir = "{data_dir}"',
        "[http]",
        'bind = "127.0.0.1"',
        f"port = {port}",
        "max_body_mb = 64",
        "[pgwire]",
        "port = 0",
        "[log]",
        *([f"{k} = {toml_value(v)}" for k, v in log_keys.items()] if log_keys else ["fsync = true"]),
        "[processing]",
        "lateness_ms = 2000",
        "max_future_secs = 300",
        "[lake]",
        f"flush_interval_ms = {lake_flush_ms}",
        *([f"flush_rows = {flush_rows}"] if flush_rows else []),
        f"symbol_buckets = {symbol_buckets}",
        f"compact_interval_secs = {compact_secs}",
    ]
    if sim is not None:
        lines.append("[[sources]]")
        lines.append('type = "simulator"')
        for k, v in sim.items():
            lines.append(f"{k} = {json.dumps(v)}")
    for t in thresholds:
        lines.append("[[alerts.threshold]]")
        for k, v in t.items():
            lines.append(f"{k} = {json.dumps(v)}")
    spike_list = (
        [dict(name="return-spike", window=200, k=8.0, min_samples=50, min_return_pct=1.0, cooldown_secs=30)]
        if spikes is None
        else spikes
    )
    for s in spike_list:
        lines.append("[[alerts.spike]]")
        for k, v in s.items():
            lines.append(f"{k} = {json.dumps(v)}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n" + extra)


DEMO_RULES = [
    dict(name="nvda-above-200", symbol="NVDA", condition="price > 200", cooldown_secs=3600),
    dict(name="btc-below-90k", symbol="BTC-USD", condition="price < 90000", cooldown_secs=3600),
]
# Fires once per symbol, then reminds about once a second, so the alert latency has samples
# at every load (a threshold fires on its edge; reminders repeat while it holds).
EVERY_SECOND_RULE = dict(name="every-second", condition="price > 0", cooldown_secs=1, reminder_secs=1, severity="info")


class Pipeline:
    """`tickflow run` on a generated config, stopped with SIGTERM; yields its summary."""

    def __init__(self, work, duration=None, **config):
        self.work = work
        self.data_dir = os.path.join(work, "data")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(work, "bench.toml")
        self.summary_path = os.path.join(work, "summary.json")
        write_config(self.config, self.data_dir, self.port, **config)
        self.started = time.perf_counter()
        args = [BIN, "run", "--config", self.config, "--summary", self.summary_path]
        if duration:
            args += ["--duration", str(duration)]
        self.stderr = open(os.path.join(work, "stderr.log"), "w")
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=self.stderr, env={**os.environ, "RUST_LOG": "warn"}
        )
        try:
            self.wait_ready()
        except Exception:
            self.__exit__()
            raise

    def wait_ready(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tickflow run exited early: {self.tail()}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url + "/healthz", timeout=1).read()
                return
            time.sleep(0.1)
        raise RuntimeError("tickflow run did not become ready")

    def status(self):
        return json.loads(urllib.request.urlopen(self.url + "/api/v1/status", timeout=10).read())

    def wait_processed(self, at_least, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status()
            if s["processed"] >= at_least and s["log_lag"] == 0:
                return s
            time.sleep(0.05)
        raise RuntimeError(f"only {self.status()['processed']} of {at_least} events processed in {timeout} s")

    def _wait_or_kill(self, timeout, message):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(message)

    def stop(self, timeout=120):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self._wait_or_kill(timeout, "tickflow run did not stop within its timeout")
        self.stderr.close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"tickflow run exited with {self.proc.returncode}: {self.tail()}")
        with open(self.summary_path) as f:
            return json.load(f)

    def wait(self, timeout):
        self._wait_or_kill(timeout, "tickflow run overran its duration")
        return self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        # On any failure the server must not outlive its run and share the cores with the next.
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        return False

    def tail(self):
        self.stderr.flush()
        with open(os.path.join(self.work, "stderr.log")) as f:
            return f.read()[-2000:]


def simulated(rate, duration, **config):
    """One simulator run at an offered `rate` (0 = flood); returns the summary."""
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
        with Pipeline(work, duration=duration, **config) as p:
            return p.wait(duration + 120)


def sim_keys(rate, **extra):
    return dict(rate=rate, seed=42, anomaly_rate=0.0005, history_days=0, **extra)


def per_million_cpu(s):
    return s["cpu_seconds"] / s["processed"] * 1e6 if s.get("cpu_seconds") and s["processed"] else None


# ---------------------------------------------------------------------------------------------
# Suites


def suite_ingest(ctx):
    """End-to-end: simulator flood and HTTP ingest, with the log, processing and lake on."""
    rows = []
    sims = []
    for i in range(RUNS):
        log(f"ingest: simulator flood, run {i + 1}/{RUNS}, {SECONDS} s")
        sims.append(simulated(0, SECONDS, sim=sim_keys(0), thresholds=DEMO_RULES))
    tps = [s["ticks_per_second"] for s in sims]
    ctx["max_ticks_per_second"] = median(tps)
    rows.append(row("ingest", "simulator → log → processing → lake, everything on", "ticks/s", median(tps), runs={"ticks_per_second": tps}))
    cpu = [per_million_cpu(s) for s in sims]
    rows.append(row("ingest", "CPU per million ticks (simulator flood, whole process)", "CPU s", median(cpu), higher_is_better=False, runs={"cpu_seconds_per_million": cpu}))
    rss = [s["peak_rss_bytes"] / 2**20 for s in sims if s.get("peak_rss_bytes")]
    rows.append(row("ingest", "peak RSS under simulator flood", "MB", median(rss), higher_is_better=False, runs={"peak_rss_mb": rss}))

    # The same flood with a sink that never connects: what it cannot write must not pile up
    # in memory (`[lake] sink_buffer_rows` bounds it; the lake keeps everything).
    down_sink = '\n[[sinks]]\ntype = "postgres"\nid = "down"\nurl = "host=127.0.0.1 port=1 dbname=tickflow user=tickflow connect_timeout=1"\ntables = ["trades"]\n'
    downs = []
    for i in range(RUNS):
        log(f"ingest: simulator flood with a PostgreSQL sink that cannot connect, run {i + 1}/{RUNS}, {SECONDS} s")
        downs.append(simulated(0, SECONDS, sim=sim_keys(0), thresholds=DEMO_RULES, extra=down_sink))
    down_rss = [s["peak_rss_bytes"] / 2**20 for s in downs if s.get("peak_rss_bytes")]
    down_tps = [s["ticks_per_second"] for s in downs]
    rows.append(row("ingest", "peak RSS under simulator flood, a PostgreSQL sink down all along", "MB", median(down_rss), higher_is_better=False, runs={"peak_rss_mb": down_rss, "ticks_per_second": down_tps},
                    note="the sink's url points at a closed port; the lake takes every tick meanwhile"))

    # Long enough (about 5 s a run) that start-up, the first flush and the dedupe windows
    # filling up weigh little against the sustained rate.
    count = 200_000 if QUICK else 5_000_000
    http, http_cpu, http_rss = [], [], []
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as ticks_dir:
        # Written once and replayed, as the PostgreSQL loaders below read theirs from a file:
        # making the ticks is the load generator's work, not the pipeline's.
        ticks = os.path.join(ticks_dir, "ticks.ndjson")
        subprocess.run([BIN, "produce", "--count", str(count), "--to", ticks], check=True, stdout=subprocess.DEVNULL)
        for i in range(RUNS):
            log(f"ingest: HTTP, {count:,} ticks replayed by `tickflow produce --from`, run {i + 1}/{RUNS}")
            with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
                with Pipeline(work, thresholds=DEMO_RULES) as p:
                    started = time.perf_counter()
                    subprocess.run(
                        [BIN, "produce", "--from", ticks, "--batch-size", "5000", "--connections", "4", "--to", p.url],
                        check=True, stdout=subprocess.DEVNULL,
                    )
                    p.wait_processed(count, timeout=300)
                    secs = time.perf_counter() - started
                    s = p.stop()
            http.append(count / secs)
            http_cpu.append(per_million_cpu(s))
            http_rss.append(s["peak_rss_bytes"] / 2**20)
    ctx["http_ticks_per_second"] = median(http)
    rows.append(row("ingest", f"HTTP ingest (NDJSON, 5,000 per request, 4 connections) → processed, {count:,} ticks", "ticks/s", median(http), runs={"ticks_per_second": http},
                    note="ticks written to a file first and replayed by `tickflow produce --from`, which runs on the same 2 cores"))
    rows.append(row("ingest", "CPU per million ticks (HTTP ingest, server process)", "CPU s", median(http_cpu), higher_is_better=False, runs={"cpu_seconds_per_million": http_cpu}))
    rows.append(row("ingest", "peak RSS, HTTP ingest", "MB", median(http_rss), higher_is_better=False, runs={"peak_rss_mb": http_rss}))
    return rows


def suite_latency(ctx):
    """p50/p99/p99.9 from ts_recv to durable in the log, queryable, alert raised, and durable in the lake, at fixed offered loads."""
    rows = []
    top = ctx.get("max_ticks_per_second") or previous_value("ingest", "simulator → log → processing → lake, everything on")
    loads = [10_000, 100_000] + ([int(top * 0.8)] if top else [])
    for rate in loads:
        runs = []
        for i in range(RUNS):
            log(f"latency: offered {rate:,}/s, run {i + 1}/{RUNS}, {SECONDS} s")
            runs.append(simulated(rate, SECONDS, sim=sim_keys(rate), thresholds=DEMO_RULES + [EVERY_SECOND_RULE]))
        label = f"{rate:,} ticks/s" + (" (80% of max)" if rate not in (10_000, 100_000) else "")
        for stage, what in [("log", "durable in the log (acknowledged)"), ("queryable", "queryable"),
                            ("alert", "alert raised and handed to the notifiers"), ("lake", "durable in the lake")]:
            for q in ("p50", "p99", "p999"):
                vals = [r["latency_seconds"][stage][q] for r in runs]
                vals = [v * 1000 for v in vals if v is not None]
                counts = [r["latency_seconds"][stage]["count"] for r in runs]
                rows.append(row("latency", f"{label}: ts_recv → {what}, {q.replace('p999', 'p99.9')}", "ms", median(vals),
                                higher_is_better=False, runs={"ms": vals, "samples": counts}))
    return rows


def suite_postgres(ctx):
    """The old pipelines' way of writing, against the local PostgreSQL, with the same ticks."""
    import psycopg

    rows = []
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
        ticks_path = os.path.join(work, "ticks.ndjson")
        n_copy = 100_000 if QUICK else 1_000_000
        subprocess.run([BIN, "produce", "--count", str(n_copy), "--to", ticks_path], check=True, stdout=subprocess.DEVNULL)
        with open(ticks_path) as f:
            lines = f.readlines()
        sizes = {"row by row, a commit each": 2_000 if QUICK else 20_000, "batches of 10, a commit each": 5_000 if QUICK else 50_000, "COPY": n_copy}
        results = {k: [] for k in sizes}
        for i in range(RUNS):
            for style, n in sizes.items():
                log(f"postgres: {style}, {n:,} ticks, run {i + 1}/{RUNS}")
                results[style].append(pg_load(psycopg, style, lines[:n]))
        sink = []
        for i in range(RUNS):
            log(f"postgres: tickflow's PostgreSQL sink, {n_copy:,} ticks, run {i + 1}/{RUNS}")
            sink.append(pg_sink(psycopg, ticks_path, n_copy))
    rows.append(row("postgres", f"ticks written into PostgreSQL: tickflow (HTTP ingest → log → lake → postgres sink, binary COPY) vs a plain psycopg COPY of the same ticks ({n_copy:,})", "ticks/s",
                    median(sink), peer="psycopg COPY", peer_value=median(results["COPY"]),
                    runs={"ticks_per_second": sink, "peer_ticks_per_second": results["COPY"]},
                    note="tickflow's figure is end to end: from the first request until every tick is in PostgreSQL, with the lake written too"))
    tickflow = ctx.get("http_ticks_per_second") or previous_value("ingest", None, prefix="HTTP ingest")
    with psycopg.connect(PG_DSN) as conn:
        settings = ", ".join(f"{k}={conn.execute(f'SHOW {k}').fetchone()[0]}" for k in ("fsync", "synchronous_commit"))
    for style, n in sizes.items():
        rows.append(row("postgres", f"ticks written durably: Python consumer into PostgreSQL, {style} ({n:,} ticks)", "ticks/s",
                        tickflow, peer=f"psycopg {style}", peer_value=median(results[style]), runs={"peer_ticks_per_second": results[style]},
                        note=f"tickflow: HTTP ingest to processed (ingest suite); PostgreSQL {settings}"))
    return rows


def pg_sink(psycopg, ticks_path, n):
    """HTTP ingest of `n` ticks with the PostgreSQL sink on; ticks/s until all are in PostgreSQL."""
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS tickflow_bench CASCADE")
    sink = f'\n[[sinks]]\ntype = "postgres"\nid = "pg"\nurl = "{PG_DSN}"\nschema = "tickflow_bench"\ntables = ["trades"]\n'
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
        with Pipeline(work, extra=sink) as p:
            deadline = time.time() + 60
            while p.status()["sinks"][0].get("position") is None:
                if time.time() > deadline:
                    raise RuntimeError(f"the PostgreSQL sink did not open: {p.status()['sinks'][0]}")
                time.sleep(0.05)
            started = time.perf_counter()
            subprocess.run(
                [BIN, "produce", "--from", ticks_path, "--batch-size", "5000", "--connections", "4", "--to", p.url],
                check=True, stdout=subprocess.DEVNULL,
            )
            p.wait_processed(n, timeout=300)
            deadline = time.time() + 300
            while True:
                s = p.status()
                # Every tick in a committed lake flush, and the sink past all of them.
                durable = s.get("rows_durable", {}).get("trades", 0)
                if durable >= n and s["sinks"][0]["lag_flushes"] == 0 and s["log_lag"] == 0:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"the PostgreSQL sink did not catch up: {s['sinks'][0]}")
                time.sleep(0.02)
            secs = time.perf_counter() - started
            p.stop()
    with psycopg.connect(PG_DSN) as conn:
        stored = conn.execute("SELECT count(*) FROM tickflow_bench.trades").fetchone()[0]
    if stored != n:
        raise RuntimeError(f"the sink stored {stored} of {n} ticks")
    return n / secs


def pg_load(psycopg, style, lines):
    """Parses each JSON tick and writes it the way the named consumer does; returns ticks/s."""
    with psycopg.connect(PG_DSN, autocommit=False) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_trades")
        conn.execute(
            "CREATE TABLE bench_trades (symbol text NOT NULL, ts_event timestamptz NOT NULL, price numeric(18,9) NOT NULL,"
            " size numeric(18,9) NOT NULL, trade_id text NOT NULL, seq bigint, PRIMARY KEY (symbol, trade_id))"
        )
        conn.commit()
        insert = "INSERT INTO bench_trades VALUES (%s, to_timestamp(%s::double precision / 1e9), %s, %s, %s, %s) ON CONFLICT DO NOTHING"

        def values(line):
            t = json.loads(line)
            return (t["symbol"], t["ts_event"], t["price"], t["size"], t["trade_id"], t["seq"])

        copy_rows = []
        if style == "COPY":
            # COPY stands for the best any client gets from the database: the JSON is parsed
            # before the clock starts, so only the load is timed.
            for line in lines:
                t = json.loads(line)
                ts = t["ts_event"]
                when = datetime.datetime.fromtimestamp(ts // 10**9, datetime.timezone.utc).replace(microsecond=ts % 10**9 // 1000)
                copy_rows.append((t["symbol"], when, t["price"], t["size"], t["trade_id"], t["seq"]))
        started = time.perf_counter()
        with conn.cursor() as cur:
            if style.startswith("row by row"):
                for line in lines:
                    cur.execute(insert, values(line))
                    conn.commit()
            elif style.startswith("batches of 10"):
                for i in range(0, len(lines), 10):
                    cur.executemany(insert, [values(line) for line in lines[i:i + 10]])
                    conn.commit()
            else:
                with cur.copy("COPY bench_trades (symbol, ts_event, price, size, trade_id, seq) FROM STDIN") as copy:
                    for r in copy_rows:
                        copy.write_row(r)
                conn.commit()
        secs = time.perf_counter() - started
        stored = conn.execute("SELECT count(*) FROM bench_trades").fetchone()[0]
        if stored != len(lines):
            raise RuntimeError(f"PostgreSQL holds {stored} of {len(lines)} ticks after {style}")
        conn.execute("DROP TABLE bench_trades")
        conn.commit()
    return len(lines) / secs


SQL_QUERIES = [
    # (name, tickflow/DataFusion SQL, DuckDB SQL); both run over the same Parquet files.
    ("1-minute bars",
     "SELECT symbol, date_trunc('minute', ts_event) AS minute, first_value(price ORDER BY ts_event) AS open, max(price) AS high,"
     " min(price) AS low, last_value(price ORDER BY ts_event) AS close, sum(size) AS volume FROM trades GROUP BY 1, 2",
     "SELECT symbol, date_trunc('minute', CAST(ts_event AS TIMESTAMPTZ)) AS minute, arg_min(price, ts_event) AS open, max(price) AS high,"
     " min(price) AS low, arg_max(price, ts_event) AS close, sum(size) AS volume FROM trades GROUP BY 1, 2"),
    ("last price per symbol",
     "SELECT symbol, last_value(price ORDER BY ts_event) AS price FROM trades GROUP BY symbol ORDER BY symbol",
     "SELECT symbol, arg_max(price, ts_event) AS price FROM trades GROUP BY symbol ORDER BY symbol"),
    # The sums stay exact decimals; dividing them as decimals overflows in DataFusion, so both
    # engines divide as DOUBLE (which is what DuckDB does on its own).
    ("VWAP per symbol",
     "SELECT symbol, CAST(sum(price * size) AS DOUBLE) / CAST(sum(size) AS DOUBLE) AS vwap FROM trades GROUP BY symbol ORDER BY symbol",
     "SELECT symbol, CAST(sum(price * size) AS DOUBLE) / CAST(sum(size) AS DOUBLE) AS vwap FROM trades GROUP BY symbol ORDER BY symbol"),
    ("filtered count",
     "SELECT count(*) AS n FROM trades WHERE symbol = 'NVDA' AND price > 150 AND size >= 100",
     "SELECT count(*) AS n FROM trades WHERE symbol = 'NVDA' AND price > 150 AND size >= 100"),
]


def suite_sql(ctx):
    """The query suite over the same Parquet files, tickflow (DataFusion) against DuckDB."""
    import duckdb

    days = 1 if QUICK else 20
    expected = 12 * days * 86_400
    rows = []
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
        log(f"sql: generating {expected:,} trades ({days} days × 12 symbols, one a second) through the pipeline")
        with Pipeline(work, sim=dict(rate=10, seed=42, anomaly_rate=0.0, quote_ratio=0.0, history_days=days, history_step_secs=1),
                      thresholds=DEMO_RULES) as p:
            p.wait_processed(expected, timeout=1800)
            p.stop()
        data_dir = p.data_dir
        # What a running pipeline does every minute, done once here so that both engines
        # read the same, final set of files.
        compacted = subprocess.run([BIN, "compact", "--data-dir", data_dir], check=True, capture_output=True, text=True)
        log(f"sql: {compacted.stdout.strip()}")
        glob = os.path.join(data_dir, "lake", "trades", "**", "*.parquet")
        files = sum(1 for _ in _walk_parquet(os.path.join(data_dir, "lake", "trades")))
        con = duckdb.connect()
        # The partition values are also columns in the files, so the hive path is not read.
        con.execute(f"CREATE VIEW trades AS SELECT * FROM read_parquet('{glob}', hive_partitioning = false)")
        n_trades = con.execute("SELECT count(*) FROM trades").fetchone()[0]
        log(f"sql: {n_trades:,} trades in {files} files")

        def tickflow_sql(name, sql):
            out = subprocess.run([BIN, "sql", "--data-dir", data_dir, "--timing", "--format", "csv", sql],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"{name}: tickflow sql failed: {out.stderr.strip()}")
            return float(re.search(r"Time: ([0-9.]+) ms", out.stderr).group(1)), out.stdout

        def timed(run):
            run()  # one untimed run each, so both engines start with the files in the page cache
            return [run() for _ in range(RUNS)]

        def duck(sql):
            # execute() runs the query to a materialized result; converting it to Python
            # objects is left out, as tickflow's timing leaves out rendering.
            started = time.perf_counter()
            con.execute(sql)
            return (time.perf_counter() - started) * 1000

        duck_ms = {name: timed(lambda: duck(duck_sql)) for name, _, duck_sql in SQL_QUERIES}
        # A new process per query, reading the lake directly: every footer is read cold.
        cold = {name: [tickflow_sql(name, sql) for _ in range(RUNS)] for name, sql, _ in SQL_QUERIES}
        # The same queries asked of a running pipeline (no source, only the lake): the way a
        # user queries tickflow, which keeps file metadata cached across queries.
        with Pipeline(work, sim=None, compact_secs=0) as server:
            warm = {name: timed(lambda: tickflow_sql(name, sql)) for name, sql, _ in SQL_QUERIES}
            # The same queries through psycopg over the Postgres wire, and as HTTP JSON, each
            # timed from the client: the difference is the protocol's and the encoding's.
            with open(os.path.join(server.data_dir, "server.json")) as f:
                pg_host, pg_port = json.load(f)["pgwire"].rsplit(":", 1)
            import psycopg
            with psycopg.connect(host=pg_host, port=int(pg_port), user="bench", dbname="tickflow", autocommit=True) as pg:
                over_pg = {name: timed(lambda: client_ms(lambda: pg.execute(sql).fetchall())) for name, sql, _ in SQL_QUERIES}
            over_http = {name: timed(lambda: client_ms(lambda: http_sql(server.url, sql))) for name, sql, _ in SQL_QUERIES}
            server.stop()
        for name, _, _ in SQL_QUERIES:
            rows.append(row("sql", f"{name}, asked of a running pipeline: psycopg over the Postgres wire vs HTTP JSON", "ms",
                            median(over_pg[name]), peer="HTTP POST /api/v1/sql (JSON)", peer_value=median(over_http[name]),
                            higher_is_better=False, runs={"pgwire_ms": over_pg[name], "http_ms": over_http[name]},
                            note="client-side time, rows fetched and decoded; the engine's own time is the warm row above"))
        label = f"over {n_trades:,} trades ({files} Parquet files)"
        for name, _, duck_sql in SQL_QUERIES:
            duck_rows = con.execute(f"SELECT count(*) FROM ({duck_sql})").fetchone()[0]
            for runs in (warm[name], cold[name]):
                tf_rows = max(0, len(runs[-1][1].strip().splitlines()) - 1)
                if tf_rows != duck_rows:
                    raise RuntimeError(f"{name}: tickflow returned {tf_rows} rows, DuckDB {duck_rows}")
            peer = dict(peer=f"DuckDB {duckdb.__version__}", peer_value=median(duck_ms[name]), higher_is_better=False)
            warm_ms = [ms for ms, _ in warm[name]]
            cold_ms = [ms for ms, _ in cold[name]]
            rows.append(row("sql", f"{name} {label}", "ms", median(warm_ms), **peer,
                            runs={"tickflow_ms": warm_ms, "duckdb_ms": duck_ms[name]},
                            note="tickflow: `tickflow sql --timing` answered by a running pipeline; DuckDB: in process; both warmed by one run"))
            rows.append(row("sql", f"{name} {label}, tickflow in a new process", "ms", median(cold_ms), **peer,
                            runs={"tickflow_ms": cold_ms, "duckdb_ms": duck_ms[name]},
                            note="tickflow: `tickflow sql --timing` with no pipeline running, reading every footer cold"))
        # What each of tickflow's planning rules buys: the same cold runs with the rule off
        # (`tickflow sql --disable RULE`); a rule that buys under 10% on every query goes.
        for rule in ("exact_sums", "narrow_sums", "symbol_runs"):
            for name, sql, _ in SQL_QUERIES:
                log(f"sql: {name} without {rule}")
                off = [tickflow_sql_without(data_dir, rule, name, sql) for _ in range(RUNS)]
                rows.append(row("sql", f"{name} {label}, new process, without {rule}", "ms", median([ms for ms, _ in cold[name]]),
                                peer=f"tickflow without {rule}", peer_value=median(off), higher_is_better=False,
                                runs={"tickflow_ms": [ms for ms, _ in cold[name]], "without_ms": off},
                                note=f"the ratio is what {rule} buys on this query; answers are the same (tested)"))
    return rows


def client_ms(run):
    started = time.perf_counter()
    run()
    return (time.perf_counter() - started) * 1000


def http_sql(url, sql):
    req = urllib.request.Request(url + "/api/v1/sql", data=json.dumps({"sql": sql}).encode(), headers={"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=600).read())


def tickflow_sql_without(data_dir, rule, name, sql):
    out = subprocess.run([BIN, "sql", "--data-dir", data_dir, "--timing", "--format", "csv", "--disable", rule, sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{name} without {rule}: tickflow sql failed: {out.stderr.strip()}")
    return float(re.search(r"Time: ([0-9.]+) ms", out.stderr).group(1))


def _walk_parquet(root):
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n.endswith(".parquet"):
                yield os.path.join(dirpath, n)


def suite_log(ctx):
    """The embedded log's durable appends against the disk's own fsync'd sequential writes."""
    rows = []
    records = 500_000 if QUICK else 4_000_000
    for producers, batch in [(1, 8192), (4, 1000)]:
        runs = []
        for i in range(RUNS):
            log(f"log: {records:,} records of 64 bytes, {producers} producer(s), batches of {batch}, run {i + 1}/{RUNS}")
            with tempfile.TemporaryDirectory(prefix="tickflow-bench-", dir=ROOT) as work:
                out = subprocess.run([LOG_BENCH, work, str(records), "64", str(batch), str(producers)], check=True, capture_output=True, text=True)
                runs.append(json.loads(out.stdout))
        mb = 1e6
        log_bw = [r["log_bytes_per_second"] / mb for r in runs]
        rows.append(row("log", f"durable append, {producers} producer(s), batches of {batch}: bandwidth vs disk, 4 MiB writes + fdatasync", "MB/s",
                        median(log_bw), peer="disk (same bytes)", peer_value=median([r["disk_4mib_bytes_per_second"] / mb for r in runs]),
                        runs={"log_mb_s": log_bw, "raw": runs}))
        rows.append(row("log", f"durable append, {producers} producer(s), batches of {batch}: vs disk at the log's own fsync cadence", "MB/s",
                        median(log_bw), peer="disk (same chunks)", peer_value=median([r["disk_same_chunks_bytes_per_second"] / mb for r in runs]),
                        runs={"log_mb_s": log_bw}))
        rows.append(row("log", f"durable append, {producers} producer(s), batches of {batch}: records", "records/s",
                        median([r["log_records_per_second"] for r in runs]), runs={"records_per_second": [r["log_records_per_second"] for r in runs]}))
    return rows


def suite_sources(ctx):
    """Each WebSocket source taking recorded trades from a local server that speaks the venue's protocol (handshake included) and sends as fast as the socket goes: tickflow's source (exact decimals, each frame's events appended to a log that only counts) against a Python client (`websockets` and `json` with `Decimal`), and tickflow's parser alone."""
    rows = []
    events = 200_000 if QUICK else 1_000_000
    framing = {"coinbase": "one trade a frame", "binance": "one trade a frame, combined stream",
               "alpaca": "20 trades a frame", "polygon": "20 trades a frame"}
    for venue, how in framing.items():
        ours, peers, parsed = [], [], []
        for i in range(RUNS):
            log(f"sources: {venue}, {events:,} trades, run {i + 1}/{RUNS}")
            ours.append(json.loads(subprocess.run([WS_BENCH, "stream", venue, str(events)], check=True, capture_output=True, text=True, timeout=600).stdout))
            parsed.append(json.loads(subprocess.run([WS_BENCH, "parse", venue, str(events)], check=True, capture_output=True, text=True, timeout=600).stdout))
            server = subprocess.Popen([WS_BENCH, "serve", venue, str(events)], stdout=subprocess.PIPE, text=True)
            try:
                url = server.stdout.readline().strip()
                out = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "ws_peer.py"), venue, url, str(events)], check=True, capture_output=True, text=True, timeout=600)
                peers.append(json.loads(out.stdout))
            finally:
                server.wait(timeout=60)
        rate = lambda runs: [r["events_per_second"] for r in runs]
        rows.append(row("sources", f"{venue} ({how}) over a local WebSocket → events appended", "events/s", median(rate(ours)),
                        peer="Python websockets + json (Decimal)", peer_value=median(rate(peers)),
                        runs={"tickflow": rate(ours), "peer": rate(peers)}))
        rows.append(row("sources", f"{venue}: the parser alone, no socket", "events/s", median(rate(parsed)), runs={"tickflow": rate(parsed)}))
    http = previous_value("ingest", None, prefix="HTTP ingest (NDJSON")
    rows.append(row("sources", "for comparison: HTTP ingest end to end (ingest suite)", "ticks/s", http,
                    note="durable in the log and processed into every table; the rows above stop at the source's append"))
    return rows


def suite_scaling(ctx):
    """Throughput against the number of symbols and of alert rules, simulator flood."""
    rows = []
    base = None
    for n in [10, 1_000, 100_000]:
        symbols = ["AAPL", "MSFT", "NVDA"] + [f"S{i:06d}" for i in range(n - 3)]
        runs, error = [], None
        for i in range(RUNS):
            log(f"scaling: {n:,} symbols, run {i + 1}/{RUNS}, {SECONDS} s")
            try:
                runs.append(simulated(0, SECONDS, sim=sim_keys(0, symbols=symbols), thresholds=DEMO_RULES[:1], symbol_buckets=64))
            except RuntimeError as e:  # one size failing still reports the others
                error = str(e)
                break
        tps = [r["ticks_per_second"] for r in runs]
        base = base or median(tps)
        note = f"failed: {error}" if error else f"{median(tps) / base:.2f}× the 10-symbol rate" if base else ""
        rows.append(row("scaling", f"{n:,} symbols (simulator flood, symbol_buckets = 64)", "ticks/s", None if error else median(tps),
                        runs={"ticks_per_second": tps, "cpu_seconds_per_million": [per_million_cpu(r) for r in runs]}, note=note))
    base = None
    for n in [0, 10, 1_000]:
        universe = ["AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "TSLA", "META", "SPY", "QUBT", "BTC-USD", "ETH-USD", "SOL-USD"]
        rules = [dict(name=f"r{i:04d}", symbol=universe[i % len(universe)], condition=f"price > {10_000_000 + i}", cooldown_secs=60)
                 for i in range(n)]
        runs = []
        for i in range(RUNS):
            log(f"scaling: {n:,} threshold rules, run {i + 1}/{RUNS}, {SECONDS} s")
            runs.append(simulated(0, SECONDS, sim=sim_keys(0), thresholds=rules, spikes=[]))
        tps = [r["ticks_per_second"] for r in runs]
        base = base or median(tps)
        rows.append(row("scaling", f"{n:,} threshold alert rules over 12 symbols (simulator flood)", "ticks/s", median(tps),
                        runs={"ticks_per_second": tps}, note=f"{median(tps) / base:.2f}× the rule-free rate"))
    return rows


def _event_time(text):
    """Seconds since the epoch of an RFC 3339 time with up to nine fractional digits."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z$", text.strip())
    whole = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return whole.timestamp() + (int((m.group(2) or "0").ljust(9, "0")[:9]) / 1e9)


def suite_alerts(ctx):
    """From a tick to its alert delivered: a local webhook receiver and a local SMTP server (aiosmtpd) time each alert against the event time of the tick that raised it, at 100,000 ticks/s offered."""
    import http.server
    import threading

    from aiosmtpd.controller import Controller

    rows = []
    rate = 100_000
    webhook_ms, smtp_ms, counts = [], [], []
    for i in range(RUNS):
        log(f"alerts: offered {rate:,}/s, run {i + 1}/{RUNS}, {SECONDS} s")
        hook, mail = [], []

        class Hook(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                hook.append(time.time() - _event_time(json.loads(body)["ts"]))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        class Mail:
            async def handle_DATA(self, server, session, envelope):
                for line in envelope.content.decode("utf-8", "replace").splitlines():
                    if line.startswith("time: "):
                        mail.append(time.time() - _event_time(line[6:]))
                return "250 OK"

        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        smtp_port = free_port()
        smtp = Controller(Mail(), hostname="127.0.0.1", port=smtp_port)
        smtp.start()
        extra = (
            f'[[notifiers]]\ntype = "webhook"\nid = "hook"\nurl = "http://127.0.0.1:{web.server_address[1]}/hook"\n'
            f'[[notifiers]]\ntype = "email"\nid = "mail"\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n'
            'from = "bench@example.com"\nto = ["desk@example.com"]\n'
        )
        try:
            simulated(rate, SECONDS, sim=sim_keys(rate), thresholds=[EVERY_SECOND_RULE], spikes=[], extra=extra)
        finally:
            web.shutdown()
            smtp.stop()
        webhook_ms.append([v * 1000 for v in hook])
        smtp_ms.append([v * 1000 for v in mail])
        counts.append((len(hook), len(mail)))

    def q(samples, p):
        s = sorted(samples)
        return s[min(len(s) - 1, int(p * len(s)))] if s else None

    for name, per_run in (("webhook", webhook_ms), ("SMTP (aiosmtpd)", smtp_ms)):
        for label, p in (("p50", 0.50), ("p99", 0.99)):
            vals = [q(r, p) for r in per_run if r]
            rows.append(row("alerts", f"{rate:,} ticks/s: tick → alert delivered to {name}, {label}", "ms", median(vals),
                            higher_is_better=False, runs={"ms": vals, "samples": [len(r) for r in per_run]},
                            note="sent on the early path as the alert is raised (flush_interval_ms = 1000 only for retries)"))
    return rows


NATS_URL = os.environ.get("TICKFLOW_TEST_NATS", "nats://127.0.0.1:4222")
KAFKA_BROKERS = os.environ.get("TICKFLOW_TEST_KAFKA", "127.0.0.1:9092")


def kafka_reachable():
    """Whether a Kafka-compatible broker answers and the binary was built with Kafka."""
    host, _, port = KAFKA_BROKERS.partition(":")
    try:
        socket.create_connection((host, int(port or 9092)), timeout=2).close()
    except OSError:
        return False
    probe = subprocess.run([BIN, "produce", "--count", "1", "--to", f"kafka://{KAFKA_BROKERS}/bench-probe"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return probe.returncode == 0


def suite_brokers(ctx):
    """Ticks through NATS JetStream into tickflow (a durable pull consumer, each batch acknowledged once durable in the log), against the broker's own publish rate: `tickflow produce --to nats://…` publishing with JetStream acknowledgements, 1,000 messages in flight per connection, one message per tick. The embedded log's HTTP ingest is the ingest suite's row."""
    rows = []
    count = 100_000 if QUICK else 1_000_000
    publish, drain, together = [], [], []
    for i in range(RUNS):
        unique = f"{os.getpid()}_{i}_{time.time_ns()}"
        stream, subject = f"BENCH_{unique}", f"bench.{unique}"
        source = (
            f'[[sources]]\ntype = "nats"\nid = "market"\nurl = "{NATS_URL}"\nstream = "{stream}"\n'
            f'subjects = ["{subject}.>"]\nbatch = 5000\n'
        )
        with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
            # The first start creates the stream and the durable consumer; stopped, it leaves
            # the stream to fill with nobody reading.
            with Pipeline(work, thresholds=DEMO_RULES, extra=source) as p:
                p.stop()
            log(f"brokers: NATS raw publish of {count:,} ticks, run {i + 1}/{RUNS}")
            started = time.perf_counter()
            subprocess.run(
                [BIN, "produce", "--count", str(count), "--batch-size", "1000", "--connections", "4",
                 "--to", f"{NATS_URL}/{subject}.ticks"],
                check=True, stdout=subprocess.DEVNULL,
            )
            publish.append(count / (time.perf_counter() - started))
            log(f"brokers: tickflow draining {count:,} ticks from the stream, run {i + 1}/{RUNS}")
            started = time.perf_counter()
            with Pipeline(work, thresholds=DEMO_RULES, extra=source) as p:
                p.wait_processed(count, timeout=600)
                drain.append(count / (time.perf_counter() - started))
                p.stop()
        with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
            unique = f"{os.getpid()}_{i}_t_{time.time_ns()}"
            stream, subject = f"BENCH_{unique}", f"bench.{unique}"
            source = (
                f'[[sources]]\ntype = "nats"\nid = "market"\nurl = "{NATS_URL}"\nstream = "{stream}"\n'
                f'subjects = ["{subject}.>"]\nbatch = 5000\n'
            )
            log(f"brokers: publishing and tickflow reading at once, {count:,} ticks, run {i + 1}/{RUNS}")
            with Pipeline(work, thresholds=DEMO_RULES, extra=source) as p:
                started = time.perf_counter()
                subprocess.run(
                    [BIN, "produce", "--count", str(count), "--batch-size", "1000", "--connections", "4",
                     "--retries", "20", "--to", f"{NATS_URL}/{subject}.ticks"],
                    check=True, stdout=subprocess.DEVNULL,
                )
                p.wait_processed(count, timeout=600)
                together.append(count / (time.perf_counter() - started))
                p.stop()
    # The log itself on JetStream: HTTP ingest answers once the server stored each request's
    # chunk; the embedded log's figure for the same ticks is measured alongside.
    http_count = 200_000 if QUICK else 2_000_000
    on_nats, on_parts, on_kafka, embedded, kafka_publish = [], [], [], [], []
    kafka = kafka_reachable()
    if not kafka:
        log(f"brokers: no Kafka broker at {KAFKA_BROKERS} or a binary without the kafka feature: Kafka rows skipped")
    with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as ticks_dir:
        ticks = os.path.join(ticks_dir, "ticks.ndjson")
        subprocess.run([BIN, "produce", "--count", str(http_count), "--to", ticks], check=True, stdout=subprocess.DEVNULL)
        for i in range(RUNS):
            if kafka:
                topic = f"benchpub-{os.getpid()}-{i}-{time.time_ns()}"
                log(f"brokers: Kafka raw publish of {count:,} ticks, run {i + 1}/{RUNS}")
                started = time.perf_counter()
                subprocess.run([BIN, "produce", "--count", str(count), "--batch-size", "1000", "--to", f"kafka://{KAFKA_BROKERS}/{topic}"],
                               check=True, stdout=subprocess.DEVNULL)
                kafka_publish.append(count / (time.perf_counter() - started))
            logs = [("NATS", "nats", 1, on_nats), ("NATS in 4 partitions", "nats", 4, on_parts), ("embedded", None, 0, embedded)]
            if kafka:
                logs.insert(1, ("Kafka", "kafka", 1, on_kafka))
            for name, kind, partitions, out in logs:
                unique = f"{os.getpid()}_{i}_l_{time.time_ns()}"
                log_keys = None
                if kind == "nats":
                    log_keys = dict(kind="nats", url=NATS_URL, stream=f"BENCHLOG_{unique}", subject=f"benchlog.{unique}", consumer=f"benchlog-{unique}")
                elif kind == "kafka":
                    # tansu 0.6 gives a batch of several records one offset: each chunk goes alone.
                    log_keys = dict(kind="kafka", brokers=KAFKA_BROKERS, topic=f"benchlog-{unique}", group=f"benchlog-{unique}",
                                    options={"batch.num.messages": "1"})
                if partitions > 1:
                    log_keys["partitions"] = partitions
                log(f"brokers: HTTP ingest with the log {name}, {http_count:,} ticks, run {i + 1}/{RUNS}")
                with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
                    with Pipeline(work, thresholds=DEMO_RULES, log_keys=log_keys) as p:
                        started = time.perf_counter()
                        subprocess.run(
                            [BIN, "produce", "--from", ticks, "--batch-size", "5000", "--connections", "4", "--to", p.url],
                            check=True, stdout=subprocess.DEVNULL,
                        )
                        p.wait_processed(http_count, timeout=600)
                        out.append(http_count / (time.perf_counter() - started))
                        p.stop()
    rows.append(row("brokers", f"HTTP ingest → log on NATS JetStream → processed, {http_count:,} ticks", "ticks/s", median(on_nats),
                    "the same, embedded log", median(embedded), runs={"nats_log": on_nats, "embedded_log": embedded},
                    note="5,000 ticks a request, 4 connections; each request one chunk, stored by the server before the 2xx"))
    if on_kafka:
        rows.append(row("brokers", f"HTTP ingest → log on Kafka (tansu) → processed, {http_count:,} ticks", "ticks/s", median(on_kafka),
                        "the same, embedded log", median(embedded), runs={"kafka_log": on_kafka, "embedded_log": embedded},
                        note="tansu 0.6 with in-memory storage, the broker the tests run; an idempotent producer with acks=all, one chunk a request"))
        rows.append(row("brokers", "HTTP ingest → log on Kafka (tansu) → processed, against Kafka raw publish", "ticks/s", median(on_kafka),
                        "Kafka raw publish (tansu, acks=all)", median(kafka_publish), runs={"kafka_log": on_kafka, "publish": kafka_publish},
                        note="`tickflow produce --to kafka://`: one message per tick; aim: at least half the raw publish rate"))
    rows.append(row("brokers", f"HTTP ingest → log on NATS JetStream in 4 partitions → processed, {http_count:,} ticks", "ticks/s", median(on_parts),
                    "the same, one partition", median(on_nats), runs={"partitions_4": on_parts, "nats_log": on_nats},
                    note="one process owning the 4 partitions: each request split by symbol (the 4 symbols hash to 3 of them), a processor per partition on 2 cores"))
    rows.append(row("brokers", "HTTP ingest → log on NATS JetStream → processed, against NATS raw publish", "ticks/s", median(on_nats),
                    "NATS raw publish (acknowledged)", median(publish), runs={"nats_log": on_nats, "publish": publish},
                    note="aim: at least half the raw publish rate (one message per tick there, one per request here)"))
    rows.append(row("brokers", f"NATS JetStream → tickflow → processed, {count:,} ticks waiting in the stream", "ticks/s", median(drain),
                    "NATS raw publish (acknowledged)", median(publish), runs={"drain": drain, "publish": publish},
                    note="aim: at least half the broker's raw publish rate; broker, producer and pipeline share the 2 cores"))
    rows.append(row("brokers", f"producer → NATS JetStream → tickflow → processed, at once, {count:,} ticks", "ticks/s", median(together),
                    "NATS raw publish (acknowledged)", median(publish), runs={"together": together, "publish": publish}))
    return rows


MOTO_URL = os.environ.get("TICKFLOW_TEST_MOTO", "http://127.0.0.1:5000")


def suite_aws(ctx):
    """SQS → DynamoDB through moto_server, draining a queue of one-tick messages: tickflow's `sqs` source and `dynamodb` sink against the old pipelines' style, a handler per batch of 10 messages as SQS → Lambda (batch size 10) → DynamoDB ran it, written as its authors' experts would (boto3: receive 10, parse with Decimal, one `batch_writer` per batch, delete the batch). Both talk to the same local moto_server, whose speed bounds both: the ratio is the figure."""
    import boto3
    from decimal import Decimal

    # moto_server takes tens of milliseconds a call: a few thousand messages already take
    # minutes each way.
    count = 1_000 if QUICK else 5_000
    creds = dict(endpoint_url=MOTO_URL, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    env = {**os.environ, "AWS_ENDPOINT_URL": MOTO_URL, "AWS_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    sqs = boto3.client("sqs", **creds)
    ddb = boto3.resource("dynamodb", **creds)
    peer, ours = [], []
    for i in range(RUNS):
        unique = f"{os.getpid()}-{i}-{time.time_ns()}"
        queue = f"bench-peer-{unique}"
        url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        table = ddb.create_table(
            TableName=queue,
            KeySchema=[{"AttributeName": "symbol", "KeyType": "HASH"}, {"AttributeName": "trade_id", "KeyType": "RANGE"}],
            AttributeDefinitions=[{"AttributeName": "symbol", "AttributeType": "S"}, {"AttributeName": "trade_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        log(f"aws: {count:,} ticks into SQS, drained by a handler per 10 messages, run {i + 1}/{RUNS}")
        subprocess.run([BIN, "produce", "--count", str(count), "--batch-size", "10", "--to", f"sqs://{queue}"], env=env, check=True, stdout=subprocess.DEVNULL)
        started = time.perf_counter()
        stored, idle = 0, 0
        while stored < count and idle < 10:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not messages:
                idle += 1
                continue
            idle = 0
            with table.batch_writer() as batch:
                for m in messages:
                    t = json.loads(m["Body"], parse_float=Decimal)
                    batch.put_item(Item={
                        "symbol": t["symbol"], "trade_id": str(t["trade_id"]), "ts_event": str(t["ts_event"]),
                        "price": Decimal(str(t["price"])), "size": Decimal(str(t.get("size", 1))),
                    })
            sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(messages)])
            stored += len(messages)
        if stored < count:
            raise RuntimeError(f"the handler stored {stored} of {count}")
        peer.append(count / (time.perf_counter() - started))

        queue = f"bench-tf-{unique}"
        url = sqs.create_queue(QueueName=queue)["QueueUrl"]
        subprocess.run([BIN, "produce", "--count", str(count), "--batch-size", "10", "--to", f"sqs://{queue}"], env=env, check=True, stdout=subprocess.DEVNULL)
        extra = (
            f'[[sources]]\ntype = "sqs"\nid = "market"\nqueue_url = "{url}"\nregion = "us-east-1"\nendpoint = "{MOTO_URL}"\n'
            f'access_key_id = "testing"\nsecret_access_key = "testing"\nwait_secs = 1\n'
            f'[[sinks]]\ntype = "dynamodb"\nid = "ddb"\ntables = {{ trades = "{queue}" }}\nstate_table = "{queue}-state"\n'
            f'create_tables = true\nregion = "us-east-1"\nendpoint = "{MOTO_URL}"\naccess_key_id = "testing"\nsecret_access_key = "testing"\n'
        )
        log(f"aws: the same through tickflow (sqs source → dynamodb sink), run {i + 1}/{RUNS}")
        with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
            with Pipeline(work, extra=extra, spikes=[]) as p:
                deadline = time.time() + 900
                while True:
                    # Every tick processed, and the sink has written the flush that holds the last.
                    s = p.status()
                    sink = next(k for k in s["sinks"] if k["id"] == "ddb")
                    if (s["processed"] >= count and s["log_lag"] == 0 and sink["lag_rows"] == 0
                            and sink["position"] == s["published_flush"]):
                        break
                    if time.time() > deadline:
                        raise RuntimeError(f"tickflow processed {s['processed']} of {count}; the sink is at {sink}")
                    time.sleep(0.1)
                ours.append(count / (time.perf_counter() - started_at(p)))
                p.stop()
    return [row("aws", f"SQS → DynamoDB, {count:,} one-tick messages waiting, through moto_server", "msgs/s", median(ours),
                "a handler per 10 messages (boto3, batch_writer)", median(peer), runs={"tickflow": ours, "handler": peer},
                note="both bounded by moto_server on the same cores; tickflow timed from its start, the handler from its first receive")]


class StreamClient(threading.Thread):
    """One live-stream connection as the dashboard opens it, read until the server ends it."""

    def __init__(self, url, path):
        super().__init__(daemon=True)
        self.url, self.path = urllib.parse.urlparse(url), path
        self.bytes = 0
        self.events = 0

    def run(self):
        conn = http.client.HTTPConnection(self.url.hostname, self.url.port, timeout=SECONDS + 120)
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn.request("GET", self.path, headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
            while line := response.readline():
                self.bytes += len(line)
                if line.startswith(b"event:"):
                    self.events += 1


def suite_dashboard(ctx):
    """The live stream's cost: a simulator flood with ten dashboards connected, each as a browser opens it (prices, alerts and status on one stream, one symbol's one-second candles on another), against the same flood with none."""
    browsers = 10
    alone, watched, streamed = [], [], []
    for i in range(RUNS):
        log(f"dashboard: simulator flood without and with {browsers} dashboards, run {i + 1}/{RUNS}, {SECONDS} s each")
        alone.append(simulated(0, SECONDS, sim=sim_keys(0), thresholds=DEMO_RULES)["ticks_per_second"])
        with tempfile.TemporaryDirectory(prefix="tickflow-bench-") as work:
            with Pipeline(work, duration=SECONDS, sim=sim_keys(0), thresholds=DEMO_RULES) as p:
                clients = []
                for _ in range(browsers):
                    clients.append(StreamClient(p.url, "/api/v1/stream?topics=prices,alerts,status"))
                    clients.append(StreamClient(p.url, "/api/v1/stream?topics=bars&interval=1s&symbols=NVDA"))
                for c in clients:
                    c.start()
                summary = p.wait(SECONDS + 120)
                for c in clients:
                    c.join(timeout=10)
        watched.append(summary["ticks_per_second"])
        streamed.append(sum(c.bytes for c in clients) / SECONDS)
        if not any(c.events for c in clients):
            raise RuntimeError("no dashboard received an event")
    return [
        row("dashboard", f"simulator flood with {browsers} dashboards streaming", "ticks/s", median(watched),
            peer="no dashboard", peer_value=median(alone), runs={"watched": watched, "alone": alone},
            note="the aim: at least 0.95×"),
        row("dashboard", f"bytes streamed to {browsers} dashboards", "bytes/s", median(streamed), higher_is_better=False,
            runs={"bytes_per_second": streamed}),
    ]


def started_at(pipeline):
    """When `tickflow run` was started (its readiness included, as a Lambda's cold start would be)."""
    return pipeline.started


SUITES = {
    "ingest": suite_ingest,
    "latency": suite_latency,
    "alerts": suite_alerts,
    "postgres": suite_postgres,
    "sql": suite_sql,
    "log": suite_log,
    "scaling": suite_scaling,
    "sources": suite_sources,
    "brokers": suite_brokers,
    "aws": suite_aws,
    "dashboard": suite_dashboard,
}

# ---------------------------------------------------------------------------------------------
# Report


def load_raw():
    try:
        with open(RAW) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"suites": {}}


def previous_value(suite, work, prefix=None):
    for r in load_raw().get("suites", {}).get(suite, {}).get("rows", []):
        if r["work"] == work or (prefix and r["work"].startswith(prefix)):
            return r["tickflow"]
    return None


def machine():
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, {platform.machine()}"


def fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("ms", "CPU s") or abs(v) < 100:
        return f"{v:,.2f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,.0f}"


def render(raw):
    out = []
    for name in SUITES:
        suite = raw["suites"].get(name)
        if not suite:
            continue
        out.append(f"### {name}\n")
        out.append(f"{SUITES[name].__doc__.strip()} Commit `{suite['commit']}`, {suite['date']}, {suite['machine']}; "
                   f"median of {suite['runs']} run(s), {suite.get('seconds_per_run', '?')} s per timed pipeline run"
                   f"{' (QUICK)' if suite.get('quick') else ''}.\n")
        out.append("| work | unit | tickflow | peer | peer figure | tickflow advantage | note |")
        out.append("|---|---|---|---|---|---|---|")
        for r in suite["rows"]:
            ratio = f"{r['ratio']:,.2f}×" if r["ratio"] is not None else "—"
            out.append(f"| {r['work']} | {r['unit']} | {fmt(r['tickflow'], r['unit'])} | {r['peer'] or '—'} | "
                       f"{fmt(r['peer_value'], r['unit'])} | {ratio} | {r['note']} |")
        if suite.get("error"):
            out.append(f"\n**This suite failed:** {suite['error']}")
        out.append("")
    return "\n".join(out)


def write_report(raw):
    with open(REPORT) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit(f"{REPORT} lacks the {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(REPORT, "w") as f:
        f.write(head + BEGIN + "\n" + render(raw) + "\n" + END + tail)


def main(argv):
    if argv == ["--render"]:  # rewrite the tables from benchmarks.json without measuring
        write_report(load_raw())
        return
    names = argv or list(SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        sys.exit(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit += "+changes" if dirty else ""
    raw = load_raw()
    ctx = {}
    failed = []
    for name in names:
        started = time.time()
        entry = {"commit": commit, "date": time.strftime("%Y-%m-%d"), "machine": machine(), "runs": RUNS, "seconds_per_run": SECONDS, "quick": QUICK}
        try:
            entry["rows"] = SUITES[name](ctx)
        except Exception as e:  # a failed suite is reported, the others still run
            log(f"{name} failed: {e}")
            entry["rows"], entry["error"] = [], str(e)
            failed.append(name)
        entry["seconds"] = round(time.time() - started, 1)
        raw["suites"][name] = entry
        with open(RAW, "w") as f:
            json.dump(raw, f, indent=1)
    write_report(raw)
    print(render({"suites": {n: raw["suites"][n] for n in names}}))
    if failed:
        sys.exit(f"suite(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main(sys.argv[1:])
