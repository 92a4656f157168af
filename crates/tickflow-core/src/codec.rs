//! The compact binary form an event takes in the durable log.
//!
//! Fixed-width fields first, then length-prefixed strings, little-endian. A record is about
//! 60 bytes, a fifth of its JSON. [`Decoder`] interns symbols and source names so decoding a
//! stream allocates almost nothing for them.

use std::collections::HashMap;
use std::sync::Arc;

use tickflow_model::{
    Alert, AlertDelivery, AlertKind, Bar, BarInterval, DeliveryStatus, Event, FedBar, Price, Qty,
    Quote, RejectReason, Severity, Symbol, Trade, TradeId, UnixNanos, Volume,
};

use crate::hash::StableBuild;
use crate::{Error, Result};

const TAG_TRADE: u8 = 1;
const TAG_QUOTE: u8 = 2;
/// Input a source could not read, kept in the log so processing sends it to the DLQ with its
/// source and reason, in order with the events around it.
const TAG_REJECTED: u8 = 3;
/// A bar a feed sent whole ([`FedBar`]).
const TAG_BAR: u8 = 4;
/// A notifier's settled delivery of an alert, for `alert_deliveries`.
const TAG_DELIVERY: u8 = 5;
/// An alert raised outside event processing (a feed gone quiet, by the wall clock), kept in
/// the log so it is stored and delivered once, in order with the events around it.
const TAG_ALERT: u8 = 6;
/// A delivery with its last error: [`TAG_DELIVERY`]'s fields, then the error. A tag of its
/// own rather than an optional tail, so a record cut short never reads as a whole one.
const TAG_DELIVERY_ERROR: u8 = 7;
const HAS_TRADE_ID: u8 = 1;
const HAS_EXCHANGE: u8 = 2;
const HAS_SEQ: u8 = 4;
const HAS_VWAP: u8 = 8;
const HAS_TRADE_COUNT: u8 = 16;
/// A bar's end, when it is not its start plus its interval: a daily bar of a day that is 23
/// or 25 hours long where the clocks change. Other bars' records are as they always were.
const HAS_END: u8 = 32;

/// A trade's fields borrowed from wherever they were parsed, so a hot path (HTTP ingest) can
/// encode a trade without building a [`Trade`] and its owned strings first.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TradeRef<'a> {
    /// Normalized, as [`Symbol::normalize`] returns it.
    pub symbol: &'a str,
    pub ts_event: UnixNanos,
    pub ts_recv: UnixNanos,
    pub price: Price,
    pub size: Qty,
    pub trade_id: Option<&'a str>,
    pub exchange: Option<&'a str>,
    pub source: &'a str,
    pub feed: &'a str,
    pub seq: Option<u64>,
}

/// A quote's fields borrowed from wherever they were parsed; see [`TradeRef`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuoteRef<'a> {
    /// Normalized, as [`Symbol::normalize`] returns it.
    pub symbol: &'a str,
    pub ts_event: UnixNanos,
    pub ts_recv: UnixNanos,
    pub bid: Price,
    pub bid_size: Qty,
    pub ask: Price,
    pub ask_size: Qty,
    pub source: &'a str,
    pub feed: &'a str,
    pub seq: Option<u64>,
}

/// Appends the encoding of `event` to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Trade(t) => encode_trade(
            &TradeRef {
                symbol: t.symbol.as_str(),
                ts_event: t.ts_event,
                ts_recv: t.ts_recv,
                price: t.price,
                size: t.size,
                trade_id: t.trade_id.as_deref(),
                exchange: t.exchange.as_deref(),
                source: &t.source,
                feed: &t.feed,
                seq: t.seq,
            },
            out,
        ),
        Event::Quote(q) => encode_quote(
            &QuoteRef {
                symbol: q.symbol.as_str(),
                ts_event: q.ts_event,
                ts_recv: q.ts_recv,
                bid: q.bid,
                bid_size: q.bid_size,
                ask: q.ask,
                ask_size: q.ask_size,
                source: &q.source,
                feed: &q.feed,
                seq: q.seq,
            },
            out,
        ),
        Event::Bar(b) => encode_bar(b, out),
    }
}

/// Appends the encoding of a feed's bar: the common header (its start as the event time),
/// the interval, the prices, then the strings.
fn encode_bar(fed: &FedBar, out: &mut Vec<u8>) {
    let b = &fed.bar;
    let own_end = b.end != bar_end(b.start, b.interval);
    let flags = (u8::from(b.vwap.is_some()) * HAS_VWAP)
        | (u8::from(b.trade_count.is_some()) * HAS_TRADE_COUNT)
        | (u8::from(own_end) * HAS_END);
    out.extend_from_slice(&[TAG_BAR, flags]);
    out.extend_from_slice(&b.start.0.to_le_bytes());
    out.extend_from_slice(&fed.ts_recv.0.to_le_bytes());
    let interval = BarInterval::ALL
        .iter()
        .position(|i| *i == b.interval)
        .unwrap_or(0);
    out.push(interval as u8);
    if own_end {
        out.extend_from_slice(&b.end.0.to_le_bytes());
    }
    for p in [b.open, b.high, b.low, b.close] {
        put_price(out, p);
    }
    out.extend_from_slice(&b.volume.raw().to_le_bytes());
    out.push(b.volume.precision());
    if let Some(vwap) = b.vwap {
        put_price(out, vwap);
    }
    if let Some(n) = b.trade_count {
        out.extend_from_slice(&n.to_le_bytes());
    }
    put_str(out, b.symbol.as_str());
    put_str(out, fed.source());
    put_str(out, &fed.feed);
}

/// Where a bar of `interval` starting at `start` ends unless its record says otherwise.
fn bar_end(start: UnixNanos, interval: BarInterval) -> UnixNanos {
    UnixNanos(start.0.saturating_add(interval.nanos()))
}

/// Appends the encoding of a trade to `out`; [`Decoder::decode`] reads it back as a [`Trade`].
pub fn encode_trade(t: &TradeRef<'_>, out: &mut Vec<u8>) {
    let flags = (u8::from(t.trade_id.is_some()) * HAS_TRADE_ID)
        | (u8::from(t.exchange.is_some()) * HAS_EXCHANGE)
        | (u8::from(t.seq.is_some()) * HAS_SEQ);
    out.extend_from_slice(&[TAG_TRADE, flags]);
    out.extend_from_slice(&t.ts_event.0.to_le_bytes());
    out.extend_from_slice(&t.ts_recv.0.to_le_bytes());
    put_price(out, t.price);
    put_qty(out, t.size);
    if let Some(seq) = t.seq {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    put_str(out, t.symbol);
    put_str(out, t.source);
    put_str(out, t.feed);
    if let Some(exchange) = t.exchange {
        put_str(out, exchange);
    }
    if let Some(id) = t.trade_id {
        put_str(out, id);
    }
}

/// Appends the encoding of a quote to `out`; [`Decoder::decode`] reads it back as a [`Quote`].
pub fn encode_quote(q: &QuoteRef<'_>, out: &mut Vec<u8>) {
    let flags = u8::from(q.seq.is_some()) * HAS_SEQ;
    out.extend_from_slice(&[TAG_QUOTE, flags]);
    out.extend_from_slice(&q.ts_event.0.to_le_bytes());
    out.extend_from_slice(&q.ts_recv.0.to_le_bytes());
    put_price(out, q.bid);
    put_qty(out, q.bid_size);
    put_price(out, q.ask);
    put_qty(out, q.ask_size);
    if let Some(seq) = q.seq {
        out.extend_from_slice(&seq.to_le_bytes());
    }
    put_str(out, q.symbol);
    put_str(out, q.source);
    put_str(out, q.feed);
}

/// Encodes one event into a fresh buffer.
pub fn to_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    encode(event, &mut out);
    out
}

/// Encoded events back to back in one buffer, ready for one log append: no allocation per
/// event, and the receive time of each kept for latency metrics.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    recv: Vec<i64>,
}

impl Batch {
    /// An empty batch with room for about `events` events.
    pub fn with_capacity(events: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(events * 80),
            ends: Vec::with_capacity(events),
            recv: Vec::with_capacity(events),
        }
    }

    /// Appends one event.
    pub fn push(&mut self, event: &Event) {
        encode(event, &mut self.bytes);
        self.sealed(event.ts_recv());
    }

    /// Appends one trade from borrowed fields.
    pub fn push_trade(&mut self, trade: &TradeRef<'_>) {
        encode_trade(trade, &mut self.bytes);
        self.sealed(trade.ts_recv);
    }

    /// Appends one quote from borrowed fields.
    pub fn push_quote(&mut self, quote: &QuoteRef<'_>) {
        encode_quote(quote, &mut self.bytes);
        self.sealed(quote.ts_recv);
    }

    /// Appends input that the source could not read (a malformed frame or line): processing
    /// sends it to the DLQ with `error` and `payload`, in order with the events around it.
    pub fn push_rejected(&mut self, rejected: &Rejected<'_>) {
        self.bytes.push(TAG_REJECTED);
        let reason = RejectReason::ALL
            .iter()
            .position(|r| *r == rejected.reason)
            .unwrap_or(0);
        self.bytes.push(reason as u8);
        self.bytes
            .extend_from_slice(&rejected.ts_recv.0.to_le_bytes());
        put_str(&mut self.bytes, rejected.source);
        put_str(&mut self.bytes, rejected.error);
        put_long_str(&mut self.bytes, rejected.payload);
        self.sealed(rejected.ts_recv);
    }

    /// Appends an alert raised outside event processing: processing stores it as a row of
    /// `alerts`, which the notifiers then deliver.
    pub fn push_alert(&mut self, a: &Alert) {
        self.bytes.push(TAG_ALERT);
        self.bytes.push(a.severity as u8);
        let kind = AlertKind::ALL
            .iter()
            .position(|k| *k == a.kind)
            .unwrap_or(0);
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(&a.ts.0.to_le_bytes());
        put_price(&mut self.bytes, a.value);
        put_str(&mut self.bytes, &a.alert_id);
        put_str(&mut self.bytes, &a.rule);
        put_str(&mut self.bytes, a.symbol.as_str());
        put_str(&mut self.bytes, &a.threshold);
        put_str(&mut self.bytes, &a.message);
        self.sealed(a.ts);
    }

    /// Appends a notifier's settled delivery of an alert: processing stores it as a row of
    /// `alert_deliveries`, in order with the events around it.
    pub fn push_delivery(&mut self, d: &AlertDelivery) {
        self.bytes.push(match d.error {
            Some(_) => TAG_DELIVERY_ERROR,
            None => TAG_DELIVERY,
        });
        let status = DeliveryStatus::ALL
            .iter()
            .position(|s| *s == d.status)
            .unwrap_or(0);
        self.bytes.push(status as u8);
        self.bytes.extend_from_slice(&d.ts.0.to_le_bytes());
        self.bytes.extend_from_slice(&d.attempts.to_le_bytes());
        put_str(&mut self.bytes, &d.alert_id);
        put_str(&mut self.bytes, &d.notifier);
        if let Some(error) = &d.error {
            put_str(&mut self.bytes, error);
        }
        self.sealed(d.ts);
    }

    fn sealed(&mut self, ts_recv: UnixNanos) {
        self.ends.push(self.bytes.len());
        self.recv.push(ts_recv.0);
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties it, keeping its capacity.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the first `len` events.
    pub(crate) fn truncate(&mut self, len: usize) {
        if len < self.ends.len() {
            self.bytes
                .truncate(if len == 0 { 0 } else { self.ends[len - 1] });
            self.ends.truncate(len);
            self.recv.truncate(len);
        }
    }

    /// Each event's encoding, in order.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        let bytes = &self.bytes;
        self.ends.iter().enumerate().map(move |(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &bytes[start..end]
        })
    }

    /// Each event's `ts_recv` in nanoseconds, in order.
    pub fn recv_times(&self) -> &[i64] {
        &self.recv
    }
}

fn put_price(out: &mut Vec<u8>, p: Price) {
    out.extend_from_slice(&p.raw().to_le_bytes());
    out.push(p.precision());
}

fn put_qty(out: &mut Vec<u8>, q: Qty) {
    out.extend_from_slice(&q.raw().to_le_bytes());
    out.push(q.precision());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Strings longer than u16::MAX are cut at a char boundary; ingest limits them far below.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// Like `put_str`, for payloads that may be longer: a u32 length.
fn put_long_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u32::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u32).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// The most of an unreadable input a source keeps as a DLQ payload: enough to see what it
/// was, and small enough that the record, with its source and error at their longest, fits
/// one message of a log on Kafka or NATS (about 900 kB).
pub const MAX_REJECTED_PAYLOAD: usize = 256 << 10;

/// `text` cut to [`MAX_REJECTED_PAYLOAD`] bytes, at a character boundary.
pub fn payload_prefix(text: &str) -> &str {
    if text.len() <= MAX_REJECTED_PAYLOAD {
        return text;
    }
    let mut end = MAX_REJECTED_PAYLOAD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Input a source could not read; see [`Batch::push_rejected`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected<'a> {
    /// `malformed` for input a source could not read; `delivery_failed` for an alert no
    /// attempt could deliver.
    pub reason: RejectReason,
    pub ts_recv: UnixNanos,
    pub source: &'a str,
    pub error: &'a str,
    /// The input as received (a frame, a line), for inspection and replay.
    pub payload: &'a str,
}

/// The rejected input a record holds, if it is one ([`Batch::push_rejected`]); `None` for an
/// event. Garbled bytes with the rejected tag read as `None` and fail to decode as events.
pub fn rejected(bytes: &[u8]) -> Option<Rejected<'_>> {
    if bytes.first() != Some(&TAG_REJECTED) {
        return None;
    }
    let mut c = Cursor { buf: &bytes[1..] };
    let reason = *RejectReason::ALL.get(usize::from(c.u8().ok()?))?;
    let ts_recv = UnixNanos(c.i64().ok()?);
    let source = c.str().ok()?;
    let error = c.str().ok()?;
    let len = u32::from_le_bytes(c.take(4).ok()?.try_into().ok()?);
    let payload = utf8(c.take(len as usize).ok()?).ok()?;
    Some(Rejected {
        reason,
        ts_recv,
        source,
        error,
        payload,
    })
}

/// The alert a record holds, if it is one ([`Batch::push_alert`]); `None` for anything else.
/// Garbled bytes with the alert tag read as `None` and fail to decode as events.
pub fn alert(bytes: &[u8]) -> Option<Alert> {
    if bytes.first() != Some(&TAG_ALERT) {
        return None;
    }
    let mut c = Cursor { buf: &bytes[1..] };
    let severity =
        *[Severity::Info, Severity::Warning, Severity::Critical].get(usize::from(c.u8().ok()?))?;
    let kind = *AlertKind::ALL.get(usize::from(c.u8().ok()?))?;
    let ts = UnixNanos(c.i64().ok()?);
    let value = c.price().ok()?;
    let alert_id = c.str().ok()?.to_string();
    let rule = c.str().ok()?.to_string();
    let symbol = Symbol::parse(c.str().ok()?).ok()?;
    let threshold = c.str().ok()?.to_string();
    let message = c.str().ok()?.to_string();
    c.buf.is_empty().then(|| Alert {
        alert_id,
        rule,
        symbol,
        ts,
        value,
        threshold,
        message,
        severity,
        delivered_to: "log".to_string(),
        kind,
    })
}

/// The delivery a record holds, if it is one ([`Batch::push_delivery`]); `None` for anything
/// else. Garbled bytes with the delivery tag read as `None` and fail to decode as events.
pub fn delivery(bytes: &[u8]) -> Option<AlertDelivery> {
    let with_error = match bytes.first() {
        Some(&TAG_DELIVERY) => false,
        Some(&TAG_DELIVERY_ERROR) => true,
        _ => return None,
    };
    let mut c = Cursor { buf: &bytes[1..] };
    let status = *DeliveryStatus::ALL.get(usize::from(c.u8().ok()?))?;
    let ts = UnixNanos(c.i64().ok()?);
    let attempts = u32::from_le_bytes(c.take(4).ok()?.try_into().ok()?);
    let alert_id = c.str().ok()?.to_string();
    let notifier = c.str().ok()?.to_string();
    let error = match with_error {
        true => Some(c.str().ok()?.to_string()),
        false => None,
    };
    c.buf.is_empty().then_some(AlertDelivery {
        alert_id,
        notifier,
        ts,
        status,
        attempts,
        error,
    })
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Error::Codec("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| Error::Codec("truncated"))?,
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?
                .try_into()
                .map_err(|_| Error::Codec("truncated"))?,
        ))
    }
    /// A length-prefixed string's bytes, not yet checked to be UTF-8.
    fn raw_str(&mut self) -> Result<&'a [u8]> {
        let len = u16::from_le_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| Error::Codec("truncated"))?,
        );
        self.take(usize::from(len))
    }
    fn str(&mut self) -> Result<&'a str> {
        utf8(self.raw_str()?)
    }
    fn price(&mut self) -> Result<Price> {
        let raw = self.i64()?;
        Ok(Price::from_raw(raw, self.u8()?))
    }
    fn qty(&mut self) -> Result<Qty> {
        let raw = self.u64()?;
        Ok(Qty::from_raw(raw, self.u8()?))
    }
}

/// The symbol of an encoded trade, quote or bar, read without decoding the rest; `None`
/// for any other record (rejected input, alerts, deliveries) or a damaged one. A
/// partitioned log routes records by it.
pub fn symbol_of(bytes: &[u8]) -> Option<&[u8]> {
    const TIMES: usize = 2 + 16;
    const PRICE: usize = 9;
    let (&tag, rest) = bytes.split_first()?;
    let flags = *rest.first()?;
    let seq = if flags & HAS_SEQ != 0 { 8 } else { 0 };
    let skip = match tag {
        TAG_TRADE => TIMES + 2 * PRICE + seq,
        TAG_QUOTE => TIMES + 4 * PRICE + seq,
        TAG_BAR => {
            TIMES
                + 1
                + if flags & HAS_END != 0 { 8 } else { 0 }
                + 4 * PRICE
                + 17
                + if flags & HAS_VWAP != 0 { PRICE } else { 0 }
                + if flags & HAS_TRADE_COUNT != 0 { 8 } else { 0 }
        }
        _ => return None,
    };
    Cursor {
        buf: bytes.get(skip..)?,
    }
    .raw_str()
    .ok()
}

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::Codec("string is not UTF-8"))
}

/// Decodes events, sharing one allocation per distinct symbol, source, feed and exchange.
/// The caches are keyed by bytes: a string found there equals one already checked, so
/// only new strings are validated.
#[derive(Debug, Default)]
pub struct Decoder {
    symbols: HashMap<Box<[u8]>, Symbol, StableBuild>,
    names: HashMap<Box<[u8]>, Arc<str>, StableBuild>,
    recent_names: [Option<Arc<str>>; 4],
}

impl Decoder {
    /// A decoder with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    fn symbol(&mut self, b: &[u8]) -> Result<Symbol> {
        if let Some(sym) = self.symbols.get(b) {
            return Ok(sym.clone());
        }
        let sym = Symbol::parse(utf8(b)?)?;
        if self.symbols.len() < 1_000_000 {
            self.symbols.insert(b.into(), sym.clone());
        }
        Ok(sym)
    }

    fn name(&mut self, b: &[u8]) -> Result<Arc<str>> {
        // A stream mostly repeats one source, feed and exchange: compare before hashing.
        if let Some(name) = self
            .recent_names
            .iter()
            .flatten()
            .find(|n| n.as_bytes() == b)
        {
            return Ok(Arc::clone(name));
        }
        if let Some(name) = self.names.get(b) {
            let name = Arc::clone(name);
            self.remember(&name);
            return Ok(name);
        }
        let name: Arc<str> = Arc::from(utf8(b)?);
        if self.names.len() < 10_000 {
            self.names.insert(b.into(), Arc::clone(&name));
        }
        self.remember(&name);
        Ok(name)
    }

    fn remember(&mut self, name: &Arc<str>) {
        self.recent_names.rotate_right(1);
        self.recent_names[0] = Some(Arc::clone(name));
    }

    /// Decodes one record produced by [`encode`].
    ///
    /// # Errors
    /// Truncated or garbled bytes, or fields the model rejects.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Event> {
        let mut c = Cursor { buf: bytes };
        let tag = c.u8()?;
        let flags = c.u8()?;
        let ts_event = UnixNanos(c.i64()?);
        let ts_recv = UnixNanos(c.i64()?);
        let event = match tag {
            TAG_TRADE => {
                let price = c.price()?;
                let size = c.qty()?;
                let seq = if flags & HAS_SEQ != 0 {
                    Some(c.u64()?)
                } else {
                    None
                };
                let symbol = self.symbol(c.raw_str()?)?;
                let source = self.name(c.raw_str()?)?;
                let feed = self.name(c.raw_str()?)?;
                let exchange = if flags & HAS_EXCHANGE != 0 {
                    Some(self.name(c.raw_str()?)?)
                } else {
                    None
                };
                let trade_id = if flags & HAS_TRADE_ID != 0 {
                    Some(TradeId::from(c.str()?))
                } else {
                    None
                };
                Event::Trade(Trade {
                    symbol,
                    ts_event,
                    ts_recv,
                    price,
                    size,
                    trade_id,
                    exchange,
                    source,
                    feed,
                    seq,
                })
            }
            TAG_QUOTE => {
                let bid = c.price()?;
                let bid_size = c.qty()?;
                let ask = c.price()?;
                let ask_size = c.qty()?;
                let seq = if flags & HAS_SEQ != 0 {
                    Some(c.u64()?)
                } else {
                    None
                };
                let symbol = self.symbol(c.raw_str()?)?;
                let source = self.name(c.raw_str()?)?;
                let feed = self.name(c.raw_str()?)?;
                Event::Quote(Quote {
                    symbol,
                    ts_event,
                    ts_recv,
                    bid,
                    bid_size,
                    ask,
                    ask_size,
                    source,
                    feed,
                    seq,
                })
            }
            TAG_BAR => {
                let interval = *BarInterval::ALL
                    .get(usize::from(c.u8()?))
                    .ok_or(Error::Codec("unknown bar interval"))?;
                let end = if flags & HAS_END != 0 {
                    UnixNanos(c.i64()?)
                } else {
                    bar_end(ts_event, interval)
                };
                let open = c.price()?;
                let high = c.price()?;
                let low = c.price()?;
                let close = c.price()?;
                let volume = Volume::from_raw(
                    i128::from_le_bytes(
                        c.take(16)?
                            .try_into()
                            .map_err(|_| Error::Codec("truncated"))?,
                    ),
                    c.u8()?,
                );
                let vwap = if flags & HAS_VWAP != 0 {
                    Some(c.price()?)
                } else {
                    None
                };
                let trade_count = if flags & HAS_TRADE_COUNT != 0 {
                    Some(c.u64()?)
                } else {
                    None
                };
                let symbol = self.symbol(c.raw_str()?)?;
                let source = self.name(c.raw_str()?)?;
                let feed = self.name(c.raw_str()?)?;
                Event::Bar(FedBar {
                    bar: Bar {
                        symbol,
                        interval,
                        start: ts_event,
                        end,
                        open,
                        high,
                        low,
                        close,
                        volume,
                        vwap,
                        trade_count,
                        is_final: true,
                        source: Some(source),
                    },
                    ts_recv,
                    feed,
                })
            }
            _ => return Err(Error::Codec("unknown event tag")),
        };
        if !c.buf.is_empty() {
            return Err(Error::Codec("trailing bytes"));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn trade() -> Event {
        Event::Trade(Trade {
            symbol: Symbol::parse("NVDA").unwrap(),
            ts_event: UnixNanos(1_763_800_000_123_456_789),
            ts_recv: UnixNanos(1_763_800_000_200_000_000),
            price: Price::parse("181.25").unwrap(),
            size: Qty::parse("100").unwrap(),
            trade_id: Some("71".into()),
            exchange: Some("V".into()),
            source: "http".into(),
            feed: "http".into(),
            seq: Some(71),
        })
    }

    #[test]
    fn rejected_input_round_trips_and_is_no_event() {
        let mut batch = Batch::default();
        let long = "x".repeat(70_000);
        for payload in ["{\"type\":\"trade\",\"pri", long.as_str()] {
            batch.push_rejected(&Rejected {
                reason: RejectReason::Malformed,
                ts_recv: UnixNanos(9),
                source: "alpaca",
                error: "unknown message type \"zz\"",
                payload,
            });
        }
        batch.push(&trade());
        let records: Vec<&[u8]> = batch.records().collect();
        let first = rejected(records[0]).expect("a rejected record");
        assert_eq!(first.source, "alpaca");
        assert_eq!(first.error, "unknown message type \"zz\"");
        assert_eq!(first.payload, "{\"type\":\"trade\",\"pri");
        assert_eq!(
            rejected(records[1]).unwrap().payload.len(),
            70_000,
            "payloads are not cut at 64 KiB"
        );
        assert_eq!(rejected(records[2]), None, "an event is not rejected input");
        assert!(Decoder::new().decode(records[0]).is_err());
        assert_eq!(batch.recv_times(), &[9, 9, 1_763_800_000_200_000_000]);
    }

    pub(crate) fn bar() -> Event {
        Event::Bar(FedBar {
            bar: Bar {
                symbol: Symbol::parse("NVDA").unwrap(),
                interval: BarInterval::D1,
                start: UnixNanos(1_763_787_600_000_000_000),
                end: UnixNanos(1_763_787_600_000_000_000 + BarInterval::D1.nanos()),
                open: Price::parse("180.1").unwrap(),
                high: Price::parse("183.25").unwrap(),
                low: Price::parse("179.5").unwrap(),
                close: Price::parse("182").unwrap(),
                volume: Volume::parse("123456789.5").unwrap(),
                vwap: Some(Price::parse("181.0405").unwrap()),
                trade_count: Some(991_222),
                is_final: true,
                source: Some("polygon".into()),
            },
            ts_recv: UnixNanos(1_763_900_000_000_000_000),
            feed: "polygon:stocks".into(),
        })
    }

    #[test]
    fn a_daily_bar_of_a_short_day_keeps_its_end_and_others_keep_their_bytes() {
        let usual = bar();
        let usual_bytes = to_bytes(&usual);
        // 2026-03-08 in New York: the clocks go forward, the day is 23 hours long.
        let Event::Bar(mut short) = bar() else {
            unreachable!()
        };
        short.bar.start = UnixNanos(1_772_946_000_000_000_000);
        short.bar.end = UnixNanos(1_772_946_000_000_000_000 + 23 * 3_600_000_000_000);
        let short = Event::Bar(short);
        let bytes = to_bytes(&short);
        assert_eq!(
            bytes.len(),
            usual_bytes.len() + 8,
            "the end only where it is its own"
        );
        assert_eq!(Decoder::new().decode(&bytes).unwrap(), short);
        assert_eq!(Decoder::new().decode(&usual_bytes).unwrap(), usual);
        assert_eq!(symbol_of(&bytes), Some(&b"NVDA"[..]));
        assert_eq!(
            usual_bytes[1] & HAS_END,
            0,
            "a usual bar's record is as before"
        );
    }

    #[test]
    fn deliveries_round_trip_and_are_no_event() {
        let d = AlertDelivery {
            alert_id: "5c48d782ed854682".into(),
            notifier: "ops".into(),
            ts: UnixNanos(7),
            status: DeliveryStatus::Failed,
            attempts: 3,
            error: Some("550 5.7.1 Refused".into()),
        };
        let mut batch = Batch::default();
        batch.push_delivery(&d);
        batch.push(&trade());
        // One without an error is a record from before errors were kept.
        let plain = AlertDelivery {
            error: None,
            ..d.clone()
        };
        let mut old = Batch::default();
        old.push_delivery(&plain);
        assert_eq!(delivery(old.records().next().unwrap()), Some(plain));
        let records: Vec<&[u8]> = batch.records().collect();
        assert_eq!(delivery(records[0]), Some(d));
        assert_eq!(rejected(records[0]), None);
        assert!(Decoder::new().decode(records[0]).is_err());
        assert_eq!(delivery(records[1]), None, "an event is no delivery");
        for n in 0..records[0].len() {
            assert_eq!(delivery(&records[0][..n]), None, "prefix {n}");
        }
    }

    #[test]
    fn alerts_round_trip_and_are_no_event() {
        let a = Alert {
            alert_id: "00aa".into(),
            rule: "feed-quiet".into(),
            symbol: Symbol::parse("ALPACA").unwrap(),
            ts: UnixNanos(9),
            value: Price::parse("61.5").unwrap(),
            threshold: "60s".into(),
            message: "alpaca: no events for 61.5 s".into(),
            severity: Severity::Critical,
            delivered_to: "log".into(),
            kind: AlertKind::Resolved,
        };
        let mut batch = Batch::default();
        batch.push_alert(&a);
        batch.push(&trade());
        let records: Vec<&[u8]> = batch.records().collect();
        assert_eq!(alert(records[0]), Some(a));
        assert_eq!(delivery(records[0]), None);
        assert!(Decoder::new().decode(records[0]).is_err());
        assert_eq!(alert(records[1]), None, "an event is no alert");
        for n in 0..records[0].len() {
            assert_eq!(alert(&records[0][..n]), None, "prefix {n}");
        }
    }

    #[test]
    fn round_trips() {
        let quote = Event::Quote(Quote {
            symbol: Symbol::parse("BTC-USD").unwrap(),
            ts_event: UnixNanos(5),
            ts_recv: UnixNanos(6),
            bid: Price::parse("97000.5").unwrap(),
            bid_size: Qty::parse("0.25").unwrap(),
            ask: Price::parse("97001").unwrap(),
            ask_size: Qty::parse("1").unwrap(),
            source: "simulator".into(),
            feed: "sim".into(),
            seq: None,
        });
        let mut d = Decoder::new();
        let Event::Bar(mut bare) = bar() else {
            unreachable!()
        };
        (bare.bar.vwap, bare.bar.trade_count) = (None, None);
        for e in [trade(), quote, bar(), Event::Bar(bare)] {
            let bytes = to_bytes(&e);
            assert_eq!(symbol_of(&bytes), Some(e.symbol().as_str().as_bytes()));
            assert_eq!(d.decode(&bytes).unwrap(), e);
            assert_eq!(d.decode(&bytes).unwrap(), e, "cached path");
        }
    }

    #[test]
    fn batch_holds_the_same_bytes_as_single_encodings() {
        let events = [trade(), trade()];
        let mut batch = Batch::with_capacity(1);
        for e in &events {
            batch.push(e);
        }
        let mut d = Decoder::new();
        assert_eq!(batch.len(), 2);
        for (record, e) in batch.records().zip(&events) {
            assert_eq!(record, to_bytes(e).as_slice());
            assert_eq!(&d.decode(record).unwrap(), e);
        }
        let recv: Vec<i64> = events.iter().map(|e| e.ts_recv().0).collect();
        assert_eq!(batch.recv_times(), recv.as_slice());
        batch.truncate(1);
        assert_eq!(batch.records().count(), 1);
        batch.clear();
        assert!(batch.is_empty() && batch.records().next().is_none());
    }

    #[test]
    fn rejects_every_truncation_and_garbage() {
        let mut d = Decoder::new();
        for event in [trade(), bar()] {
            let bytes = to_bytes(&event);
            for n in 0..bytes.len() {
                assert!(d.decode(&bytes[..n]).is_err(), "prefix {n}");
            }
        }
        let mut bad_interval = to_bytes(&bar());
        bad_interval[18] = 9;
        assert!(d.decode(&bad_interval).is_err());
        let bytes = to_bytes(&trade());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(d.decode(&extra).is_err());
        let mut bad_tag = bytes;
        bad_tag[0] = 9;
        assert!(d.decode(&bad_tag).is_err());
    }

    #[test]
    fn strings_that_are_not_utf8_are_refused_and_not_cached() {
        let good = to_bytes(&trade());
        // Each string field in turn: symbol "NVDA", source and feed "http", exchange "V".
        for (field, at) in [("symbol", "NVDA"), ("source", "http"), ("exchange", "V")] {
            let at = good
                .windows(at.len())
                .position(|w| w == at.as_bytes())
                .unwrap();
            let mut bad = good.clone();
            bad[at] = 0xff;
            let mut d = Decoder::new();
            for _ in 0..2 {
                let e = d.decode(&bad).unwrap_err().to_string();
                assert!(e.contains("UTF-8"), "{field}: {e}");
            }
            assert_eq!(d.decode(&good).unwrap(), trade(), "{field}");
        }
    }
}
