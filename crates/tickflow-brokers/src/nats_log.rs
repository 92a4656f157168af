//! NATS JetStream as tickflow's own log (`[log] kind = "nats"`): the records the embedded log
//! would hold on local disk are kept in a stream on the server instead, so they outlive the
//! machine that received them.
//!
//! - **Records in chunks.** One append becomes one message (more if it would pass the
//!   server's payload limit) holding its records length-prefixed. A message per tick would
//!   cap ingest at the server's message rate; a chunk costs one round trip for thousands.
//! - **Offsets from the stream.** A record's offset is its message's stream sequence shifted
//!   left by [`INDEX_BITS`], plus its place in the message. The server numbers the messages,
//!   so any number of processes can append without agreeing on anything, and an offset
//!   names one record forever. Offsets are not dense: the lag in records is not their
//!   difference, and the log reports its backlog in messages ([`NatsLog::messages_behind`]).
//! - **Acknowledged when stored.** An append returns once the server has stored every chunk
//!   (with the stream's replicas), which is when ingest acknowledges.
//! - **Read through a durable pull consumer** created at the message holding the processor's
//!   checkpointed offset; [`NatsLog::commit_offset`] acknowledges (ack policy `all`) the last
//!   chunk the checkpoint covers, so `nats consumer info` shows the processor's backlog. The
//!   checkpoint, written with the lake, stays the truth of where processing resumes.
//! - **Retention is the server's** (`max_age`, `max_bytes` from `[log]`), which deletes old
//!   messages whether or not they were processed. Messages deleted before they were read are
//!   reported, with how many.
//!
//! The methods block the calling thread; the client runs on a small runtime of its own, so
//! they may be called from anywhere (HTTP handlers and sources append from async tasks).
//! Only one thread reads ([`NatsLog::read`], [`NatsLog::wait_for`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;

/// Bits of a record's offset that number it inside its message; the bits above hold the
/// message's stream sequence.
pub const INDEX_BITS: u32 = 20;
/// The most records one message holds.
const MAX_RECORDS: u64 = (1 << INDEX_BITS) - 1;
/// Header naming the chunk format, so a later format can be told apart.
const FORMAT_HEADER: &str = "Tickflow-Log";
const FORMAT: &str = "1";
/// Room left under the server's payload limit for the headers.
const HEADER_ROOM: usize = 512;

/// The offset of record `index` of message `sequence`.
pub fn offset(sequence: u64, index: u64) -> u64 {
    (sequence << INDEX_BITS) | index
}

/// The stream sequence of the message holding `offset`.
pub fn sequence_of(offset: u64) -> u64 {
    offset >> INDEX_BITS
}
/// Chunks read ahead of the processor.
const READ_AHEAD: usize = 64;
/// Consumer ack wait: far past any flush interval, so the server never redelivers a chunk
/// that is merely waiting for its flush.
const ACK_WAIT: Duration = Duration::from_secs(600);

/// Where the log lives on the server.
#[derive(Debug, Clone)]
pub struct NatsLogConfig {
    pub url: String,
    /// The stream's name; created when missing, with `subject` as its only subject.
    pub stream: String,
    pub subject: String,
    /// The durable consumer the processor reads through.
    pub consumer: String,
    /// Copies of each message the server keeps (a cluster's replication factor).
    pub replicas: usize,
    /// Messages older than this are deleted by the server.
    pub max_age: Option<Duration>,
    /// The stream's size limit; the oldest messages go first.
    pub max_bytes: Option<u64>,
    /// Where processing stands (its checkpoint): a stream that ends before it was deleted
    /// or replaced, and is refused.
    pub checkpoint: u64,
}

/// A failure talking to the server, or a log that is not tickflow's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsLogError(pub String);

impl std::fmt::Display for NatsLogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NATS log: {}", self.0)
    }
}

impl std::error::Error for NatsLogError {}

type Result<T, E = NatsLogError> = std::result::Result<T, E>;

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> NatsLogError {
    move |e| NatsLogError(format!("{what}: {e}"))
}

/// The log on a JetStream stream; see the module docs.
pub struct NatsLog {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    reader: Mutex<Reader>,
}

impl std::fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLog")
            .field("url", &self.shared.config.url)
            .field("stream", &self.shared.config.stream)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: NatsLogConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    /// The last stream sequence known to be taken.
    last_sequence: AtomicU64,
    /// The first sequence still in the stream, as far as known.
    first_sequence: AtomicU64,
    max_payload: usize,
    /// Chunks read whole and not yet acknowledged: (offset after the chunk, reply subject).
    unacked: Mutex<VecDeque<(u64, async_nats::Subject)>>,
}

/// One message read: its records and where they start.
struct Chunk {
    first: u64,
    payload: Bytes,
    reply: Option<async_nats::Subject>,
}

#[derive(Default)]
struct Reader {
    rx: Option<tokio::sync::mpsc::Receiver<Chunk>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The offset the next record handed out has, when reading continues from there.
    cursor: Option<u64>,
    /// A chunk partly handed out: the chunk, its remaining bytes, their first offset.
    held: Option<(Chunk, Bytes, u64)>,
}

impl NatsLog {
    /// Connects, creates the stream when missing (and refuses one that holds other
    /// subjects), and finds the stream's end.
    ///
    /// # Errors
    /// The server cannot be reached, the stream is not tickflow's log, or it ends before
    /// the checkpoint.
    pub fn open(config: NatsLogConfig) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tickflow-nats-log")
            .enable_all()
            .build()
            .map_err(err("starting the client's runtime"))?;
        let shared = rt.block_on(connect(config))?;
        Ok(Self {
            rt,
            shared: Arc::new(shared),
            reader: Mutex::new(Reader::default()),
        })
    }

    /// Runs `work` on the client's runtime and waits for it, from any thread.
    fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv().ok()
    }

    /// Appends records; returns their offsets once the server has stored all of them.
    ///
    /// # Errors
    /// The server refused or did not confirm a chunk: none of the batch counts as appended
    /// (some of it may be stored, and is then read as any record is).
    pub fn append_batch(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        let chunks = chunks(records, self.shared.max_payload)?;
        let shared = Arc::clone(&self.shared);
        self.run(async move { shared.publish(chunks).await })
            .unwrap_or_else(|| Err(NatsLogError("the client stopped".into())))
    }

    /// An offset above every record known to be in the stream: the next message's first.
    pub fn next_offset(&self) -> u64 {
        offset(self.shared.last_sequence.load(Ordering::Acquire) + 1, 0)
    }

    /// The first offset still in the stream, as far as this process knows.
    pub fn start_offset(&self) -> u64 {
        offset(self.shared.first_sequence.load(Ordering::Acquire), 0)
    }

    /// Messages in the stream at or after the one holding `next`: the backlog of a reader
    /// there, in messages (each an ingest batch or part of one).
    pub fn messages_behind(&self, next: u64) -> u64 {
        let last = self.shared.last_sequence.load(Ordering::Acquire);
        let at = sequence_of(next);
        if next & MAX_RECORDS == 0 {
            // At the start of a message: it is still to read.
            (last + 1).saturating_sub(at.max(1))
        } else {
            last.saturating_sub(at)
        }
    }

    /// Reads up to `max` records from offset `from` on into `out` (emptied first), without
    /// waiting: what has arrived from the server. Reading elsewhere than where the last
    /// read ended starts the consumer again at `from`.
    ///
    /// # Errors
    /// The consumer could not be created at `from`.
    pub fn read(
        &self,
        from: u64,
        max: usize,
        out: &mut impl tickflow_log::RecordSink,
    ) -> Result<()> {
        out.clear_records();
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if reader.cursor != Some(from) {
            self.restart(&mut reader, from)?;
        }
        while out.record_count() < max {
            let (chunk, mut rest, mut offset) = match reader.held.take() {
                Some(held) => held,
                None => match reader
                    .rx
                    .as_mut()
                    .map(tokio::sync::mpsc::Receiver::try_recv)
                {
                    Some(Ok(chunk)) => {
                        let rest = chunk.payload.clone();
                        let first = chunk.first;
                        (chunk, rest, first)
                    }
                    _ => break,
                },
            };
            // The message holding `from`, or the next one when `from` is inside a message
            // (which may have ended there).
            let expected = sequence_of(from) + u64::from(from & MAX_RECORDS != 0);
            if sequence_of(offset) > expected.max(1)
                && out.record_count() == 0
                && reader.cursor == Some(from)
            {
                let lost = sequence_of(offset) - expected.max(1);
                tracing::error!(from, to = offset, lost_messages = lost, stream = %self.shared.config.stream, "messages were deleted by the stream's retention before they were processed");
            }
            while out.record_count() < max && rest.has_remaining() {
                let Some(record) = next_record(&mut rest) else {
                    tracing::error!(offset, stream = %self.shared.config.stream, "a chunk's records end early; the rest of it is skipped");
                    rest.clear();
                    break;
                };
                if offset >= from {
                    out.push_record(offset, &record);
                }
                offset += 1;
            }
            reader.cursor = Some(offset.max(from));
            if rest.has_remaining() {
                reader.held = Some((chunk, rest, offset));
            } else if let Some(reply) = chunk.reply {
                self.shared
                    .unacked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((offset, reply));
            }
        }
        Ok(())
    }

    /// Waits up to `timeout` for something to read at `from` (call [`NatsLog::read`] after).
    pub fn wait_for(&self, from: u64, timeout: Duration) {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if reader.cursor != Some(from) || reader.held.is_some() {
            return;
        }
        let Some(mut rx) = reader.rx.take() else {
            drop(reader);
            std::thread::sleep(timeout);
            return;
        };
        let got = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, rx.recv()).await });
        reader.rx = Some(rx);
        if let Ok(Some(chunk)) = got {
            let rest = chunk.payload.clone();
            let first = chunk.first;
            reader.held = Some((chunk, rest, first));
        }
    }

    /// Acknowledges every chunk below `next` on the durable consumer: the processor's
    /// checkpoint has them. Only for the consumer's view of the backlog, so a failure is
    /// logged, not returned.
    pub fn commit_offset(&self, next: u64) {
        let reply = {
            let mut unacked = self
                .shared
                .unacked
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut last = None;
            while unacked.front().is_some_and(|(end, _)| *end <= next) {
                last = unacked.pop_front().map(|(_, reply)| reply);
            }
            last
        };
        if let Some(reply) = reply {
            let client = self.shared.client.clone();
            self.rt.spawn(async move {
                if let Err(e) = client.publish(reply, Bytes::from_static(b"+ACK")).await {
                    tracing::warn!(error = %e, "could not acknowledge processed chunks on the NATS log's consumer");
                }
            });
        }
    }

    /// Starts the consumer at the chunk holding `from`.
    fn restart(&self, reader: &mut Reader, from: u64) -> Result<()> {
        if let Some(task) = reader.task.take() {
            task.abort();
        }
        reader.rx = None;
        reader.held = None;
        reader.cursor = None;
        self.shared
            .unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let first = self.shared.first_sequence.load(Ordering::Acquire);
        let sequence = sequence_of(from).max(first).max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let shared = Arc::clone(&self.shared);
        reader.task = Some(self.rt.spawn(follow(shared, sequence, tx)));
        reader.rx = Some(rx);
        reader.cursor = Some(from);
        tracing::info!(from, sequence, stream = %self.shared.config.stream, consumer = %self.shared.config.consumer, "reading the NATS log");
        Ok(())
    }
}

impl Drop for NatsLog {
    fn drop(&mut self) {
        if let Some(task) = self
            .reader
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .task
            .take()
        {
            task.abort();
        }
    }
}

async fn connect(config: NatsLogConfig) -> Result<Shared> {
    let client = async_nats::connect(&config.url)
        .await
        .map_err(|e| NatsLogError(format!("connecting to {}: {e}", config.url)))?;
    let js = jetstream::new(client.clone());
    let max_age = config.max_age.unwrap_or_default();
    let max_bytes = config
        .max_bytes
        .map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX));
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            max_age,
            max_bytes,
            ..Default::default()
        })
        .await
        .map_err(|e| NatsLogError(format!("opening stream {}: {e}", config.stream)))?;
    let info = stream
        .info()
        .await
        .map_err(err("reading the stream"))?
        .clone();
    if info.config.subjects != [config.subject.clone()] {
        return Err(NatsLogError(format!(
            "stream {} takes subjects {:?}, not only {}: it is not this tickflow log; name another stream in [log] stream",
            config.stream, info.config.subjects, config.subject
        )));
    }
    // Retention follows the config at every start.
    if info.config.max_age != max_age || info.config.max_bytes != max_bytes {
        let mut updated = info.config.clone();
        updated.max_age = max_age;
        updated.max_bytes = max_bytes;
        js.update_stream(updated)
            .await
            .map_err(err("applying [log] retention to the stream"))?;
        tracing::info!(stream = %config.stream, ?max_age, max_bytes, "stream retention updated");
    }
    let state = stream
        .info()
        .await
        .map_err(err("reading the stream"))?
        .state
        .clone();
    let end = offset(state.last_sequence + 1, 0);
    if config.checkpoint > end {
        return Err(NatsLogError(format!(
            "processing is at offset {} (message {}) but stream {} ends at message {}: the stream was deleted or replaced. Restore it, or start with a new data directory",
            config.checkpoint,
            sequence_of(config.checkpoint),
            config.stream,
            state.last_sequence
        )));
    }
    let max_payload = client.server_info().max_payload;
    Ok(Shared {
        config,
        client,
        js,
        stream,
        last_sequence: AtomicU64::new(state.last_sequence),
        first_sequence: AtomicU64::new(state.first_sequence.max(1)),
        max_payload: max_payload.saturating_sub(HEADER_ROOM).max(1024),
        unacked: Mutex::new(VecDeque::new()),
    })
}

impl Shared {
    /// Publishes `chunks` (all sent before any acknowledgement is awaited) and returns the
    /// offsets from the first record of the first to after the last of the last.
    async fn publish(&self, chunks: Vec<(Bytes, u64)>) -> Result<Range<u64>> {
        let mut acks = Vec::with_capacity(chunks.len());
        for (payload, count) in chunks {
            let message = jetstream::message::PublishMessage::build()
                .payload(payload)
                .header(FORMAT_HEADER, FORMAT);
            let ack = self
                .js
                .send_publish(self.config.subject.clone(), message)
                .await
                .map_err(err("publishing"))?;
            acks.push((ack, count));
        }
        let mut range: Option<Range<u64>> = None;
        for (ack, count) in acks {
            let stored = ack.await.map_err(err("the server did not store a chunk"))?;
            self.last_sequence
                .fetch_max(stored.sequence, Ordering::AcqRel);
            let first = offset(stored.sequence, 0);
            let end = offset(stored.sequence, count);
            range = Some(match range {
                Some(r) => r.start.min(first)..r.end.max(end),
                None => first..end,
            });
        }
        Ok(range.unwrap_or(0..0))
    }
}

/// Feeds chunks from `sequence` on into `tx` through the durable consumer, starting it
/// again after the last chunk received whenever the server or the connection fails.
async fn follow(shared: Arc<Shared>, mut sequence: u64, tx: tokio::sync::mpsc::Sender<Chunk>) {
    let mut delays = tickflow_core::retry::backoff(Duration::from_secs(5));
    loop {
        match follow_once(&shared, &mut sequence, &tx).await {
            Ok(()) => return,
            Err(e) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                tracing::warn!(error = %e, sequence, ?delay, stream = %shared.config.stream, "reading the NATS log failed; starting the consumer again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

async fn follow_once(
    shared: &Shared,
    sequence: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
) -> Result<()> {
    let name = &shared.config.consumer;
    // The durable is the processor's alone: it is made again where the checkpoint says.
    let _ = shared.stream.delete_consumer(name).await;
    let consumer: consumer::PullConsumer = shared
        .stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *sequence,
            },
            ack_policy: consumer::AckPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .map_err(err("creating the consumer"))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(READ_AHEAD)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(err("reading"))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(err("reading"))?;
        let info = message.info().map_err(err("reading a chunk's metadata"))?;
        let stream_sequence = info.stream_sequence;
        if stream_sequence < *sequence {
            // Redelivered: already handed on.
            continue;
        }
        let format = message
            .headers
            .as_ref()
            .and_then(|h| h.get(FORMAT_HEADER))
            .map(|v| v.as_str().to_string());
        if format.as_deref() != Some(FORMAT) {
            tracing::error!(
                sequence = stream_sequence,
                ?format,
                "a message that is not a tickflow log chunk (format {FORMAT}) is skipped"
            );
            *sequence = stream_sequence + 1;
            continue;
        }
        shared
            .last_sequence
            .fetch_max(stream_sequence, Ordering::AcqRel);
        let chunk = Chunk {
            first: offset(stream_sequence, 0),
            payload: message.message.payload.clone(),
            reply: message.message.reply.clone(),
        };
        if tx.send(chunk).await.is_err() {
            return Ok(());
        }
        *sequence = stream_sequence + 1;
    }
    Err(NatsLogError("the consumer's messages ended".into()))
}

/// Packs records into chunks under `max_payload` bytes: each record as a 4-byte
/// little-endian length and its bytes. Returns each chunk with its record count.
fn chunks(records: &[&[u8]], max_payload: usize) -> Result<Vec<(Bytes, u64)>> {
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut count = 0u64;
    for record in records {
        let size = 4 + record.len();
        if size > max_payload {
            return Err(NatsLogError(format!(
                "a record of {} bytes does not fit the server's payload limit of {} bytes",
                record.len(),
                max_payload
            )));
        }
        if buf.len() + size > max_payload || count == MAX_RECORDS {
            out.push((buf.split().freeze(), count));
            count = 0;
        }
        buf.put_u32_le(u32::try_from(record.len()).unwrap_or(u32::MAX));
        buf.put_slice(record);
        count += 1;
    }
    if count > 0 {
        out.push((buf.freeze(), count));
    }
    Ok(out)
}

/// Takes the next record off a chunk's bytes, or `None` if they end inside one.
fn next_record(rest: &mut Bytes) -> Option<Bytes> {
    if rest.remaining() < 4 {
        return None;
    }
    let len = rest.get_u32_le() as usize;
    (rest.remaining() >= len).then(|| rest.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_split_under_the_payload_limit_and_read_back() {
        let records: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        // 14 bytes a record: three fit in 50.
        let chunks = chunks(&refs, 50).expect("fits");
        assert_eq!(
            chunks.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let mut back = Vec::new();
        for (bytes, _) in chunks {
            let mut rest = bytes;
            while rest.has_remaining() {
                back.push(next_record(&mut rest).expect("whole").to_vec());
            }
        }
        assert_eq!(back, records);
    }

    #[test]
    fn a_record_over_the_limit_is_refused_and_a_cut_chunk_is_noticed() {
        let big = vec![0u8; 100];
        let e = chunks(&[&big], 50).expect_err("too big");
        assert!(e.0.contains("100 bytes"), "{e}");
        let mut cut = Bytes::from_static(&[5, 0, 0, 0, 1, 2]);
        assert_eq!(next_record(&mut cut), None);
    }
}
