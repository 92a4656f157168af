//! Dedupe by natural key within the lateness window.
//!
//! Keys only need remembering while an event with them could still be accepted: anything
//! older than `watermark - lateness` is rejected as late before it reaches dedupe, so keys
//! below that line are dropped. Memory is therefore bounded by rate × lateness.

use std::collections::{HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use tickflow_model::Event;

use tickflow_core::hash::{StableBuild, stable_hash};

/// The natural key of an event, hashed: trade = (source, ts_event, trade_id or seq), quote =
/// (source, ts_event, seq). When a trade has neither id nor seq (or a quote no seq), its
/// prices and sizes stand in, so identical redeliveries still collapse.
pub fn natural_key(event: &Event) -> u64 {
    match event {
        Event::Trade(t) => match (&t.trade_id, t.seq) {
            (Some(id), _) => {
                stable_hash(&[b"t", t.source.as_bytes(), id.as_bytes()], &[t.ts_event.0])
            }
            (None, Some(seq)) => {
                stable_hash(&[b"ts", t.source.as_bytes()], &[t.ts_event.0, seq as i64])
            }
            (None, None) => stable_hash(
                &[b"tp", t.source.as_bytes()],
                &[t.ts_event.0, t.price.raw(), t.size.raw() as i64],
            ),
        },
        Event::Quote(q) => match q.seq {
            Some(seq) => stable_hash(&[b"q", q.source.as_bytes()], &[q.ts_event.0, seq as i64]),
            None => stable_hash(
                &[b"qp", q.source.as_bytes()],
                &[
                    q.ts_event.0,
                    q.bid.raw(),
                    q.ask.raw(),
                    q.bid_size.raw() as i64,
                    q.ask_size.raw() as i64,
                ],
            ),
        },
    }
}

/// Keys seen for one symbol, in arrival order with their event times.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DedupeWindow {
    order: VecDeque<(i64, u64)>,
    #[serde(skip)]
    seen: HashSet<u64, StableBuild>,
}

impl DedupeWindow {
    /// Records `key`; false if it was already there.
    pub fn insert(&mut self, ts: i64, key: u64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((ts, key));
        true
    }

    /// Forgets keys with event time below `cutoff`.
    pub fn evict_before(&mut self, cutoff: i64) {
        while let Some(&(ts, key)) = self.order.front() {
            if ts >= cutoff {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    /// Rebuilds the lookup set after deserializing (only the ordered keys are stored).
    pub fn restore(&mut self) {
        self.seen = self.order.iter().map(|&(_, k)| k).collect();
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no keys are held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}
