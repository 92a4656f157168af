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
/// (source, ts_event, seq), bar = (symbol, interval, start). When a trade has neither id nor seq (or a quote no seq), its
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
        Event::Bar(b) => stable_hash(
            &[
                b"b",
                b.bar.symbol.as_str().as_bytes(),
                b.bar.interval.as_str().as_bytes(),
            ],
            &[b.bar.start.0],
        ),
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
            if self.in_order.len() == self.in_order.capacity() {
                // A quarter more rather than twice as much: the window's size is steady
                // (rate × lateness), and a ring buffer's every slot is touched in turn, so
                // its whole capacity stays resident.
                self.in_order.reserve_exact(self.in_order.len() / 4 + 16);
            }
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

/// Checkpointed in a struct of one field, as one byte string: per key, the event time as
/// a zigzag varint of its difference from the previous key's, then the 8-byte key. Event
/// times of neighbouring keys are close, so a key takes about 10 bytes; the earlier layout
/// (a sequence of (time, key) pairs, see [`LegacyWindow`]) took about 19 and cost the
/// processor thread several times as long to write, for every key at every flush.
#[derive(Serialize, Deserialize)]
struct Stored<K> {
    order: K,
}

impl Serialize for DedupeWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut packed = Vec::with_capacity(self.len() * 10);
        let mut prev = 0i64;
        for &(ts, key) in self.in_order.iter().chain(self.others.values().flatten()) {
            let delta = ts.wrapping_sub(prev);
            prev = ts;
            let mut zigzag = ((delta << 1) ^ (delta >> 63)) as u64;
            while zigzag >= 0x80 {
                packed.push((zigzag as u8) | 0x80);
                zigzag >>= 7;
            }
            packed.push(zigzag as u8);
            packed.extend_from_slice(&key.to_le_bytes());
        }
        Stored {
            order: serde_bytes_ref(&packed),
        }
        .serialize(serializer)
    }
}

/// Serializes a byte slice as bytes (serde's default for `&[u8]` is a sequence).
fn serde_bytes_ref(bytes: &[u8]) -> impl Serialize + '_ {
    struct B<'a>(&'a [u8]);
    impl Serialize for B<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    B(bytes)
}

/// The keys of a packed byte string, or what is wrong with it.
fn unpack(mut bytes: &[u8]) -> Result<Vec<(i64, u64)>, &'static str> {
    let mut keys = Vec::with_capacity(bytes.len() / 10);
    let mut prev = 0i64;
    while !bytes.is_empty() {
        let mut zigzag = 0u64;
        let mut shift = 0;
        loop {
            let (&b, rest) = bytes.split_first().ok_or("truncated event time")?;
            bytes = rest;
            if shift > 63 {
                return Err("event time varint too long");
            }
            zigzag |= u64::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let ts = prev.wrapping_add(delta);
        prev = ts;
        let (key, rest) = bytes.split_first_chunk::<8>().ok_or("truncated key")?;
        bytes = rest;
        keys.push((ts, u64::from_le_bytes(*key)));
    }
    Ok(keys)
}

fn from_keys(mut keys: Vec<(i64, u64)>) -> DedupeWindow {
    keys.sort_unstable();
    let mut window = DedupeWindow::default();
    for (ts, key) in keys {
        window.insert(ts, key);
    }
    window
}

impl<'de> Deserialize<'de> for DedupeWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Packed(Vec<(i64, u64)>);
        impl<'de> Deserialize<'de> for Packed {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = Packed;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("packed dedupe keys")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Packed, E> {
                        unpack(v).map(Packed).map_err(E::custom)
                    }
                }
                d.deserialize_bytes(Visit)
            }
        }
        let keys = Stored::<Packed>::deserialize(deserializer)?.order.0;
        Ok(from_keys(keys))
    }
}

/// A window in the layout of checkpoint format 1: a sequence of (event time, key) pairs.
#[derive(Debug, Default)]
pub(crate) struct LegacyWindow(pub(crate) DedupeWindow);

impl<'de> Deserialize<'de> for LegacyWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let keys = Stored::<Vec<(i64, u64)>>::deserialize(deserializer)?.order;
        Ok(LegacyWindow(from_keys(keys)))
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
    fn checkpoint_layouts_round_trip_and_old_ones_load() {
        let mut w = DedupeWindow::default();
        let far = 1_795_305_600_000_000_000;
        for (ts, key) in [(5, 1), (7, 2), (6, 3), (7, 4), (far, u64::MAX), (-far, 0)] {
            w.insert(ts, key);
        }
        let bytes = postcard::to_allocvec(&w).unwrap();
        let mut back: DedupeWindow = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.len(), 6);
        for (ts, key) in [(5, 1), (7, 2), (6, 3), (7, 4), (far, u64::MAX), (-far, 0)] {
            assert!(!back.insert(ts, key), "({ts}, {key}) survived");
        }
        // Format 1: a struct holding a sequence of the keys.
        let old_bytes =
            postcard::to_allocvec(&VecDeque::from(vec![(7i64, 2u64), (5, 1), (6, 3)])).unwrap();
        let LegacyWindow(mut old) = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!(old.len(), 3);
        assert!(!old.insert(6, 3) && !old.insert(5, 1) && !old.insert(7, 2));
        assert!(unpack(&[0x80]).is_err() && unpack(&[2, 1, 2]).is_err());
        assert!(unpack(&[0xff; 11]).is_err());
    }

    proptest! {
        #[test]
        fn packed_keys_round_trip(keys in prop::collection::vec((any::<i64>(), any::<u64>()), 0..50)) {
            let w = DedupeWindow { in_order: VecDeque::new(), others: BTreeMap::from([(0, keys.iter().copied().collect())]) };
            let bytes = postcard::to_allocvec(&w).unwrap();
            let Stored { order } = postcard::from_bytes::<Stored<&[u8]>>(&bytes).unwrap();
            let mut got = unpack(order).unwrap();
            let mut want: Vec<(i64, u64)> = w.others[&0].iter().copied().collect();
            got.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(got, want);
        }
    }
}
