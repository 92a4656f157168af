//! Dedupe by natural key within the lateness window.
//!
//! Keys only need remembering while an event with them could still be accepted: anything
//! older than `watermark - lateness` is rejected as late before it reaches dedupe, so keys
//! below that line are dropped. Memory is therefore bounded by rate × lateness.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use tickflow_model::Event;

use tickflow_core::hash::{StableBuild, stable_hash};

/// Out-of-order keys are kept in slices of 2^28 ns (about a quarter of a second) of event time.
const SLICE_BITS: u32 = 28;

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

/// Keys seen for one symbol within the lateness window.
///
/// Nearly every tick of a symbol arrives with a newer event time than the one before it, and
/// a duplicate always has the same event time as its original (the key includes it). So
/// the first key seen at each new event time is appended to `in_order`, sorted by time, at
/// the cost of a comparison; eviction pops its front. Only keys that share an event time
/// with an earlier key, or arrive behind the newest one, go into `others`: hash sets by
/// slice of event time, dropped whole once the slice is past the cutoff. A slice may keep a
/// few keys older than the cutoff for a while; they can never match, as every event that
/// reaches dedupe is at or after the cutoff and a key includes its event time.
/// A hash set of every key, as before, cost a cache miss on each insert and each removal.
#[derive(Debug, Default)]
pub struct DedupeWindow {
    /// Keys with strictly increasing event times.
    in_order: VecDeque<(i64, u64)>,
    /// Every other key, in sets by `ts >> SLICE_BITS`.
    others: BTreeMap<i64, HashSet<(i64, u64), StableBuild>>,
}

impl DedupeWindow {
    /// Records `key` of an event at `ts`; false if it was already there.
    pub fn insert(&mut self, ts: i64, key: u64) -> bool {
        let newest = match self.in_order.back() {
            Some(&(newest, _)) => newest,
            None => i64::MIN,
        };
        if ts > newest {
            self.in_order.push_back((ts, key));
            return true;
        }
        // At most one entry of `in_order` has this time: find it by bisection.
        let at = self.in_order.partition_point(|&(t, _)| t < ts);
        if self.in_order.get(at) == Some(&(ts, key)) {
            return false;
        }
        self.others
            .entry(ts >> SLICE_BITS)
            .or_default()
            .insert((ts, key))
    }

    /// Forgets keys with event time below `cutoff`.
    pub fn evict_before(&mut self, cutoff: i64) {
        while self.in_order.front().is_some_and(|&(ts, _)| ts < cutoff) {
            self.in_order.pop_front();
        }
        // A slice goes once all of it is before the cutoff.
        while let Some(entry) = self.others.first_entry() {
            let end = entry
                .key()
                .saturating_add(1)
                .saturating_mul(1 << SLICE_BITS);
            if end > cutoff {
                break;
            }
            entry.remove();
        }
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.in_order.len() + self.others.values().map(HashSet::len).sum::<usize>()
    }

    /// Whether no keys are held.
    pub fn is_empty(&self) -> bool {
        self.in_order.is_empty() && self.others.is_empty()
    }
}

/// Checkpointed as one sequence of (event time, key) in a struct of one field, the layout
/// earlier versions wrote, so their checkpoints still load.
#[derive(Serialize, Deserialize)]
struct Stored<K> {
    order: K,
}

impl Serialize for DedupeWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Stored { order: Keys(self) }.serialize(serializer)
    }
}

struct Keys<'a>(&'a DedupeWindow);

impl Serialize for Keys<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for key in self
            .0
            .in_order
            .iter()
            .chain(self.0.others.values().flatten())
        {
            seq.serialize_element(key)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for DedupeWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut keys = Stored::<Vec<(i64, u64)>>::deserialize(deserializer)?.order;
        keys.sort_unstable();
        let mut window = DedupeWindow::default();
        for (ts, key) in keys {
            window.insert(ts, key);
        }
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against the plain definition: a key is a duplicate while a key equal in time and
        /// hash is held, and eviction forgets the keys below the cutoff. As in processing,
        /// no event older than a cutoff already applied reaches the window.
        #[test]
        fn matches_a_set_of_every_key(ops in prop::collection::vec((0i64..40, 0u64..4, any::<bool>()), 0..300)) {
            let mut w = DedupeWindow::default();
            let mut model: HashSet<(i64, u64)> = HashSet::new();
            let mut cutoff = 0;
            for (t, key, evict) in ops {
                // Times a third of a slice apart, so slices fill and expire.
                let ts = t << (SLICE_BITS - 2);
                if evict {
                    cutoff = cutoff.max(ts);
                    w.evict_before(cutoff);
                    model.retain(|&(t, _)| t >= cutoff);
                } else if ts >= cutoff {
                    prop_assert_eq!(w.insert(ts, key), model.insert((ts, key)));
                }
                prop_assert!(w.len() >= model.len());
            }
            let back: DedupeWindow = postcard::from_bytes(&postcard::to_allocvec(&w).unwrap()).unwrap();
            prop_assert_eq!(back.len(), w.len());
        }
    }

    #[test]
    fn remembers_in_order_equal_and_behind_keys_until_evicted() {
        const S: i64 = 1 << SLICE_BITS;
        let mut w = DedupeWindow::default();
        assert!(w.insert(10 * S, 1));
        assert!(w.insert(20 * S, 2));
        assert!(w.insert(20 * S, 3), "same time, other key");
        assert!(w.insert(15 * S, 4), "behind the newest");
        assert!(w.insert(30 * S, 5));
        for (ts, key) in [(10, 1), (20, 2), (20, 3), (15, 4), (30, 5)] {
            assert!(!w.insert(ts * S, key), "({ts}, {key}) is a duplicate");
        }
        assert!(
            w.insert(15 * S, 2),
            "same key at another time is another event"
        );
        assert_eq!(w.len(), 6);
        w.evict_before(20 * S);
        assert_eq!(w.len(), 3);
        assert!(!w.insert(20 * S, 3) && !w.insert(20 * S, 2) && !w.insert(30 * S, 5));
        w.evict_before(31 * S);
        assert!(w.is_empty());
    }

    #[test]
    fn checkpoint_layout_is_one_sequence_of_keys() {
        let mut w = DedupeWindow::default();
        for (ts, key) in [(5, 1), (7, 2), (6, 3), (7, 4)] {
            w.insert(ts, key);
        }
        let bytes = postcard::to_allocvec(&w).unwrap();
        // What earlier versions wrote: a struct holding a VecDeque of the keys.
        let old: VecDeque<(i64, u64)> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(old.len(), 4);
        let old_bytes =
            postcard::to_allocvec(&VecDeque::from(vec![(7i64, 2u64), (5, 1), (6, 3)])).unwrap();
        let mut back: DedupeWindow = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!(back.len(), 3);
        assert!(!back.insert(6, 3) && !back.insert(5, 1) && !back.insert(7, 2));
        let again: DedupeWindow = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(again.len(), 4);
    }
}
