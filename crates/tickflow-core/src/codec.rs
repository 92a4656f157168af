//! The compact binary form an event takes in the durable log.
//!
//! Fixed-width fields first, then length-prefixed strings, little-endian. A record is about
//! 60 bytes, a fifth of its JSON. [`Decoder`] interns symbols and source names so decoding a
//! stream allocates almost nothing for them.

use std::collections::HashMap;
use std::sync::Arc;

use tickflow_model::{Event, Price, Qty, Quote, Symbol, Trade, UnixNanos};

use crate::hash::StableBuild;
use crate::{Error, Result};

const TAG_TRADE: u8 = 1;
const TAG_QUOTE: u8 = 2;
const HAS_TRADE_ID: u8 = 1;
const HAS_EXCHANGE: u8 = 2;
const HAS_SEQ: u8 = 4;

/// Appends the encoding of `event` to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    match event {
        Event::Trade(t) => {
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
            put_str(out, t.symbol.as_str());
            put_str(out, &t.source);
            put_str(out, &t.feed);
            if let Some(exchange) = &t.exchange {
                put_str(out, exchange);
            }
            if let Some(id) = &t.trade_id {
                put_str(out, id);
            }
        }
        Event::Quote(q) => {
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
            put_str(out, q.symbol.as_str());
            put_str(out, &q.source);
            put_str(out, &q.feed);
        }
    }
}

/// Encodes one event into a fresh buffer.
pub fn to_bytes(event: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    encode(event, &mut out);
    out
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
    fn str(&mut self) -> Result<&'a str> {
        let len = u16::from_le_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| Error::Codec("truncated"))?,
        );
        std::str::from_utf8(self.take(usize::from(len))?)
            .map_err(|_| Error::Codec("string is not UTF-8"))
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

/// Decodes events, sharing one allocation per distinct symbol, source, feed and exchange.
#[derive(Debug, Default)]
pub struct Decoder {
    symbols: HashMap<Box<str>, Symbol, StableBuild>,
    names: HashMap<Box<str>, Arc<str>, StableBuild>,
}

impl Decoder {
    /// A decoder with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    fn symbol(&mut self, s: &str) -> Result<Symbol> {
        if let Some(sym) = self.symbols.get(s) {
            return Ok(sym.clone());
        }
        let sym = Symbol::parse(s)?;
        if self.symbols.len() < 1_000_000 {
            self.symbols.insert(s.into(), sym.clone());
        }
        Ok(sym)
    }

    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(name) = self.names.get(s) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(s);
        if self.names.len() < 10_000 {
            self.names.insert(s.into(), Arc::clone(&name));
        }
        name
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
                let symbol = self.symbol(c.str()?)?;
                let source = self.name(c.str()?);
                let feed = self.name(c.str()?);
                let exchange = if flags & HAS_EXCHANGE != 0 {
                    Some(self.name(c.str()?))
                } else {
                    None
                };
                let trade_id = if flags & HAS_TRADE_ID != 0 {
                    Some(c.str()?.to_string())
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
                let symbol = self.symbol(c.str()?)?;
                let source = self.name(c.str()?);
                let feed = self.name(c.str()?);
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
        for e in [trade(), quote] {
            let bytes = to_bytes(&e);
            assert_eq!(d.decode(&bytes).unwrap(), e);
            assert_eq!(d.decode(&bytes).unwrap(), e, "cached path");
        }
    }

    #[test]
    fn rejects_every_truncation_and_garbage() {
        let bytes = to_bytes(&trade());
        let mut d = Decoder::new();
        for n in 0..bytes.len() {
            assert!(d.decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(d.decode(&extra).is_err());
        let mut bad_tag = bytes;
        bad_tag[0] = 9;
        assert!(d.decode(&bad_tag).is_err());
    }
}
