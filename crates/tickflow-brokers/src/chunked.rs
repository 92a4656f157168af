//! What tickflow's log on a broker (NATS JetStream, Kafka) keeps in each message: a chunk
//! of records, a 4-byte little-endian count and then each record as a 4-byte length and its
//! bytes. A message per tick would cap ingest at the broker's message rate; a chunk costs one
//! round trip for thousands.
//!
//! A record's offset is its message's position in the broker (a JetStream stream sequence, or
//! a Kafka offset plus one, both counted from 1) shifted left by [`INDEX_BITS`], plus its
//! place in the message counted so that the last record's is the highest index: the offset
//! after a message's last record is then the next message's first possible offset, so a
//! reader's position says whether it has finished a message. The broker numbers the
//! messages, so any number of processes can append without agreeing on anything, and an
//! offset names one record forever; offsets are not dense, so a backlog is counted in
//! messages.
//!
//! [`Reader`] hands the records of chunks a broker task delivers to the processor, from any
//! offset (inside a chunk too), and tells which chunks were read whole so they can be
//! committed on the broker.

use std::ops::Range;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bits of a record's offset that number it inside its message; the bits above hold the
/// message's position.
pub const INDEX_BITS: u32 = 20;
/// The most records one message holds.
pub(crate) const MAX_RECORDS: u64 = (1 << INDEX_BITS) - 1;
/// Chunks read ahead of the processor.
pub(crate) const READ_AHEAD: usize = 64;

/// The offset of index `index` of message `position`; `offset(p, 0)` is before every record
/// of message `p`.
pub fn offset(position: u64, index: u64) -> u64 {
    (position << INDEX_BITS) | index
}

/// The offset of record `i` of a message at `position` holding `count` records.
pub fn record_offset(position: u64, count: u64, i: u64) -> u64 {
    offset(position, (1 << INDEX_BITS) - count + i)
}

/// The position of the message holding `offset`.
pub fn position_of(offset: u64) -> u64 {
    offset >> INDEX_BITS
}

/// Messages from the one holding `next` to `last`: the backlog of a reader at `next` (a
/// message it is inside counts whole).
pub fn messages_behind(next: u64, last: u64) -> u64 {
    (last + 1).saturating_sub(position_of(next).max(1))
}

/// Packs records into chunks under `max_payload` bytes, each with its count in front.
/// Returns each chunk with its record count.
///
/// # Errors
/// A record that does not fit a chunk on its own.
/// What [`pack`]'s refusal says: a record that can never fit one message, which no retry
/// helps.
pub(crate) const TOO_LARGE: &str = "does not fit the broker's message limit";

pub(crate) fn pack(records: &[&[u8]], max_payload: usize) -> Result<Vec<(Bytes, u64)>, String> {
    fn close(buf: &mut BytesMut, count: u64, out: &mut Vec<(Bytes, u64)>) {
        let mut chunk = buf.split();
        chunk[..4].copy_from_slice(&u32::try_from(count).unwrap_or(u32::MAX).to_le_bytes());
        out.push((chunk.freeze(), count));
    }
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    let mut count = 0u64;
    for record in records {
        let size = 4 + record.len();
        if size + 4 > max_payload {
            return Err(format!(
                "a record of {} bytes {TOO_LARGE} of {max_payload} bytes",
                record.len()
            ));
        }
        if count > 0 && (buf.len() + size > max_payload || count == MAX_RECORDS) {
            close(&mut buf, count, &mut out);
            count = 0;
        }
        if count == 0 {
            // The count, filled in when the chunk closes.
            buf.put_u32_le(0);
        }
        buf.put_u32_le(u32::try_from(record.len()).unwrap_or(u32::MAX));
        buf.put_slice(record);
        count += 1;
    }
    if count > 0 {
        close(&mut buf, count, &mut out);
    }
    Ok(out)
}

/// Widens `range` (the offsets an append returns) by a chunk stored at `position`.
pub(crate) fn cover(range: Option<Range<u64>>, position: u64, count: u64) -> Range<u64> {
    let (first, end) = (record_offset(position, count, 0), offset(position + 1, 0));
    match range {
        Some(r) => r.start.min(first)..r.end.max(end),
        None => first..end,
    }
}

/// Takes the next record off a chunk's bytes, or `None` if they end inside one.
fn next_record(rest: &mut Bytes) -> Option<Bytes> {
    if rest.remaining() < 4 {
        return None;
    }
    let len = rest.get_u32_le() as usize;
    (rest.remaining() >= len).then(|| rest.split_to(len))
}

/// One message delivered by a broker task: its position, its bytes, and what commits it
/// on the broker.
pub(crate) struct Chunk<T> {
    pub position: u64,
    pub payload: Bytes,
    pub token: T,
}

impl<T> Chunk<T> {
    /// Its records' bytes and the first one's offset; `None` for a payload too short to
    /// hold its count.
    fn open(&self) -> Option<(Bytes, u64)> {
        let mut rest = self.payload.clone();
        if rest.remaining() < 4 {
            return None;
        }
        let count = u64::from(rest.get_u32_le()).min(MAX_RECORDS);
        Some((rest, record_offset(self.position, count, 0)))
    }
}

/// Hands out the records of the chunks a broker task sends, in order; see the module docs.
pub(crate) struct Reader<T> {
    /// Names the log in what is logged.
    name: String,
    rx: Option<tokio::sync::mpsc::Receiver<Chunk<T>>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The offset the next record handed out has, while reading continues from there.
    cursor: Option<u64>,
    /// A chunk partly handed out: the chunk, its remaining bytes, their first offset.
    held: Option<(Chunk<T>, Bytes, u64)>,
}

impl<T> Reader<T> {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            rx: None,
            task: None,
            cursor: None,
            held: None,
        }
    }

    /// Whether the next read at `from` continues where the last ended.
    pub(crate) fn is_at(&self, from: u64) -> bool {
        self.cursor == Some(from)
    }

    /// Reads from `from` on what `task` sends on `rx`, instead of what was read before.
    pub(crate) fn start(
        &mut self,
        from: u64,
        rx: tokio::sync::mpsc::Receiver<Chunk<T>>,
        task: tokio::task::JoinHandle<()>,
    ) {
        self.stop();
        self.rx = Some(rx);
        self.task = Some(task);
        self.cursor = Some(from);
    }

    /// Stops the broker task; the next read starts afresh.
    pub(crate) fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.rx = None;
        self.held = None;
        self.cursor = None;
    }

    /// Puts up to `max` records from `from` on into `out` (emptied first), from what has
    /// arrived, without waiting. Each chunk read whole is passed to `done` with the offset
    /// after it.
    pub(crate) fn fill(
        &mut self,
        from: u64,
        max: usize,
        out: &mut impl tickflow_log::RecordSink,
        mut done: impl FnMut(u64, T),
    ) {
        out.clear_records();
        while out.record_count() < max {
            let (chunk, mut rest, mut at) = match self.held.take() {
                Some(held) => held,
                None => match self.rx.as_mut().map(tokio::sync::mpsc::Receiver::try_recv) {
                    Some(Ok(chunk)) => match chunk.open() {
                        Some((rest, first)) => (chunk, rest, first),
                        None => {
                            tracing::error!(log = %self.name, position = chunk.position, "a chunk too short to hold its count is skipped");
                            continue;
                        }
                    },
                    _ => break,
                },
            };
            // The message holding `from`: the one it is inside, or the next to start.
            let expected = position_of(from).max(1);
            if position_of(at) > expected && out.record_count() == 0 && self.is_at(from) {
                let lost = position_of(at) - expected;
                tracing::error!(log = %self.name, from, to = at, lost_messages = lost, "messages were deleted by the broker's retention before they were processed");
            }
            while out.record_count() < max && rest.has_remaining() {
                let Some(record) = next_record(&mut rest) else {
                    tracing::error!(log = %self.name, offset = at, "a chunk's records end early; the rest of it is skipped");
                    rest.clear();
                    break;
                };
                if at >= from {
                    out.push_record(at, &record);
                }
                at += 1;
            }
            if rest.has_remaining() {
                self.cursor = Some(at.max(from));
                self.held = Some((chunk, rest, at));
            } else {
                // Past the message: the next one's first possible offset.
                let end = offset(chunk.position + 1, 0);
                self.cursor = Some(end.max(from));
                done(end, chunk.token);
            }
        }
    }

    /// Waits up to `timeout` on `rt` for a chunk to read at `from`. Not from an async task.
    pub(crate) fn wait(&mut self, from: u64, timeout: Duration, rt: &tokio::runtime::Runtime) {
        if !self.is_at(from) || self.held.is_some() {
            return;
        }
        let Some(mut rx) = self.rx.take() else {
            std::thread::sleep(timeout);
            return;
        };
        let got = rt.block_on(async { tokio::time::timeout(timeout, rx.recv()).await });
        self.rx = Some(rx);
        if let Ok(Some(chunk)) = got {
            match chunk.open() {
                Some((rest, first)) => self.held = Some((chunk, rest, first)),
                None => {
                    tracing::error!(log = %self.name, position = chunk.position, "a chunk too short to hold its count is skipped");
                }
            }
        }
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A [`Reader`] and the chunks it has read whole and not yet committed: what each broker
/// log's `read`, `wait_for` and `commit_offset` share.
pub(crate) struct Reading<T> {
    reader: std::sync::Mutex<Reader<T>>,
    uncommitted: Uncommitted<T>,
}

impl<T> Reading<T> {
    pub(crate) fn new(name: String) -> Self {
        Self {
            reader: std::sync::Mutex::new(Reader::new(name)),
            uncommitted: Uncommitted::default(),
        }
    }

    /// [`Reader::fill`], after `restart` has started a broker task at `from` when the last
    /// read did not end there (the reader is stopped and nothing is pending then).
    pub(crate) fn read<E>(
        &self,
        from: u64,
        max: usize,
        out: &mut impl tickflow_log::RecordSink,
        restart: impl FnOnce(&mut Reader<T>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        if !reader.is_at(from) {
            reader.stop();
            self.uncommitted.clear();
            restart(&mut reader)?;
        }
        reader.fill(from, max, out, |end, token| {
            self.uncommitted.push(end, token)
        });
        Ok(())
    }

    /// [`Reader::wait`].
    pub(crate) fn wait(&self, from: u64, timeout: Duration, rt: &tokio::runtime::Runtime) {
        self.reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .wait(from, timeout, rt);
    }

    /// The token of the last chunk read whole that ends at or before `next`, taking it and
    /// those before it: what to commit once `next` is checkpointed.
    pub(crate) fn take_through(&self, next: u64) -> Option<T> {
        self.uncommitted.take_through(next)
    }
}

/// Chunks read whole and not yet committed on the broker: (offset after the chunk, token).
pub(crate) struct Uncommitted<T>(std::sync::Mutex<std::collections::VecDeque<(u64, T)>>);

impl<T> Default for Uncommitted<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::default())
    }
}

impl<T> Uncommitted<T> {
    pub(crate) fn push(&self, end: u64, token: T) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((end, token));
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Takes every chunk ending at or before `next`; returns the last one's token.
    pub(crate) fn take_through(&self, next: u64) -> Option<T> {
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        while queue.front().is_some_and(|(end, _)| *end <= next) {
            last = queue.pop_front().map(|(_, token)| token);
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpack(chunk: Bytes) -> Vec<Vec<u8>> {
        let mut rest = chunk;
        let count = rest.get_u32_le();
        let mut back = Vec::new();
        while rest.has_remaining() {
            back.push(next_record(&mut rest).expect("whole").to_vec());
        }
        assert_eq!(back.len(), count as usize);
        back
    }

    /// A source's rejected input at its longest (a poison message of many megabytes, with a
    /// source id and an error at the codec's limits) still fits one chunk, so it reaches the
    /// DLQ instead of stopping the source.
    #[cfg(feature = "kafka")]
    #[test]
    fn the_largest_rejected_input_fits_one_chunk() {
        use tickflow_core::codec::{Batch, MAX_REJECTED_PAYLOAD, Rejected, payload_prefix};
        let payload = "x".repeat(4 * MAX_REJECTED_PAYLOAD);
        let long = "e".repeat(100_000);
        let mut batch = Batch::default();
        batch.push_rejected(&Rejected {
            reason: tickflow_model::RejectReason::Malformed,
            ts_recv: tickflow_model::UnixNanos(1),
            source: &long,
            error: &long,
            payload: payload_prefix(&payload),
        });
        let records: Vec<&[u8]> = batch.records().collect();
        let chunks = pack(&records, crate::kafka_log::MAX_CHUNK).expect("fits");
        assert_eq!(chunks.len(), 1);
        assert!(records[0].len() > MAX_REJECTED_PAYLOAD);
    }

    #[test]
    fn chunks_split_under_the_payload_limit_and_read_back() {
        let records: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        // 14 bytes a record after a 4-byte count: three fit in 50.
        let chunks = pack(&refs, 50).expect("fits");
        assert_eq!(
            chunks.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        let back: Vec<Vec<u8>> = chunks.into_iter().flat_map(|(b, _)| unpack(b)).collect();
        assert_eq!(back, records);
    }

    #[test]
    fn a_record_over_the_limit_is_refused_and_a_cut_chunk_is_noticed() {
        let big = vec![0u8; 100];
        let e = pack(&[&big], 50).expect_err("too big");
        assert!(e.contains("100 bytes"), "{e}");
        let mut cut = Bytes::from_static(&[5, 0, 0, 0, 1, 2]);
        assert_eq!(next_record(&mut cut), None);
    }

    #[test]
    fn a_message_read_to_its_end_leaves_the_reader_at_the_next() {
        // Three records in message 2: the last has the highest index.
        assert_eq!(record_offset(2, 3, 2) + 1, offset(3, 0));
        assert_eq!(messages_behind(0, 0), 0);
        assert_eq!(messages_behind(0, 3), 3);
        assert_eq!(messages_behind(record_offset(2, 3, 1), 3), 2);
        assert_eq!(messages_behind(offset(3, 0), 3), 1);
        assert_eq!(messages_behind(offset(4, 0), 3), 0);
    }

    #[test]
    fn a_reader_hands_out_records_from_inside_a_chunk_and_reports_whole_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut reader = Reader::new("test".into());
        let task = rt.spawn(async {});
        let from = record_offset(1, 4, 2);
        reader.start(from, rx, task);
        for (position, n) in [(1u64, 4u64), (2, 3)] {
            let records: Vec<Vec<u8>> = (0..n).map(|i| vec![position as u8, i as u8]).collect();
            let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
            let (payload, _) = pack(&refs, 1000).unwrap().remove(0);
            tx.try_send(Chunk {
                position,
                payload,
                token: position,
            })
            .unwrap();
        }
        let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut whole = Vec::new();
        reader.fill(from, 3, &mut out, |end, t| whole.push((end, t)));
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            [
                record_offset(1, 4, 2),
                record_offset(1, 4, 3),
                record_offset(2, 3, 0)
            ]
        );
        assert_eq!(whole, [(offset(2, 0), 1)]);
        let next = record_offset(2, 3, 1);
        assert!(reader.is_at(next));
        reader.fill(next, 10, &mut out, |end, t| whole.push((end, t)));
        assert_eq!(
            out,
            [
                (record_offset(2, 3, 1), vec![2, 1]),
                (record_offset(2, 3, 2), vec![2, 2])
            ]
        );
        assert_eq!(whole.last(), Some(&(offset(3, 0), 2)));
        assert!(reader.is_at(offset(3, 0)));
        let pending = Uncommitted::default();
        for (end, t) in whole {
            pending.push(end, t);
        }
        assert_eq!(pending.take_through(next), Some(1));
        assert_eq!(pending.take_through(offset(3, 0)), Some(2));
        assert_eq!(pending.take_through(u64::MAX), None);
    }
}
