use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Bar, Price, Qty, Symbol, TradeId, UnixNanos};

/// One trade print. Natural key: (source, symbol, ts_event, trade_id or seq).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Trade {
    pub symbol: Symbol,
    /// The venue's time of the trade.
    pub ts_event: UnixNanos,
    /// When tickflow received it.
    pub ts_recv: UnixNanos,
    pub price: Price,
    pub size: Qty,
    pub trade_id: Option<TradeId>,
    pub exchange: Option<Arc<str>>,
    /// Entry point or adapter, e.g. `simulator`, `http`, `alpaca`.
    pub source: Arc<str>,
    /// Feed within the source, e.g. `alpaca:iex`.
    pub feed: Arc<str>,
    pub seq: Option<u64>,
}

/// One top-of-book quote. Natural key: (source, symbol, ts_event, seq).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: Symbol,
    pub ts_event: UnixNanos,
    pub ts_recv: UnixNanos,
    pub bid: Price,
    pub bid_size: Qty,
    pub ask: Price,
    pub ask_size: Qty,
    pub source: Arc<str>,
    pub feed: Arc<str>,
    pub seq: Option<u64>,
}

/// A bar a source received whole: a vendor's aggregate, or a polled quote's price, high and
/// low. Its `bar.source` is `Some(source)`. Natural key: (symbol, interval, start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FedBar {
    pub bar: Bar,
    pub ts_recv: UnixNanos,
    pub feed: Arc<str>,
}

impl FedBar {
    /// The source it came from.
    pub fn source(&self) -> &str {
        self.bar.source.as_deref().unwrap_or_default()
    }
}

/// Any market event a source can emit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Trade(Trade),
    Quote(Quote),
    Bar(FedBar),
}

impl Event {
    /// The event's symbol.
    #[inline]
    pub fn symbol(&self) -> &Symbol {
        match self {
            Event::Trade(t) => &t.symbol,
            Event::Quote(q) => &q.symbol,
            Event::Bar(b) => &b.bar.symbol,
        }
    }

    /// The venue's timestamp; a bar's start.
    #[inline]
    pub fn ts_event(&self) -> UnixNanos {
        match self {
            Event::Trade(t) => t.ts_event,
            Event::Quote(q) => q.ts_event,
            Event::Bar(b) => b.bar.start,
        }
    }

    /// Our receive timestamp.
    #[inline]
    pub fn ts_recv(&self) -> UnixNanos {
        match self {
            Event::Trade(t) => t.ts_recv,
            Event::Quote(q) => q.ts_recv,
            Event::Bar(b) => b.ts_recv,
        }
    }

    /// The entry point it came through.
    #[inline]
    pub fn source(&self) -> &str {
        match self {
            Event::Trade(t) => &t.source,
            Event::Quote(q) => &q.source,
            Event::Bar(b) => b.source(),
        }
    }
}
