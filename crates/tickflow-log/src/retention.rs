//! Which closed segments retention may delete.
//!
//! Whole segments only, oldest first and contiguous (so the log always holds one unbroken
//! range of offsets), never the active segment, and never a segment holding a record that some
//! consumer has not committed past: retention bounds disk use, it must not lose unread data.

use std::time::{Duration, SystemTime};

/// What [`crate::Log::enforce_retention`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_removed: usize,
    pub bytes_removed: u64,
}

/// What retention needs to know about one closed segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClosedSegment {
    pub(crate) size: u64,
    /// Offset after its last record (the next segment's base).
    pub(crate) end: u64,
    /// File mtime, i.e. when its newest record was written. `None` if it could not be read; such
    /// a segment is not deleted by age.
    pub(crate) modified: Option<SystemTime>,
}

/// The policy, as configured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_age: Option<Duration>,
}

/// How many of the oldest `closed` segments (ordered oldest first) to delete. `min_committed`
/// is the lowest committed consumer offset, if any consumer exists.
pub(crate) fn segments_to_delete(
    closed: &[ClosedSegment],
    policy: Policy,
    min_committed: Option<u64>,
    now: SystemTime,
) -> usize {
    let mut kept_bytes: u64 = closed.iter().map(|s| s.size).sum();
    let cutoff = policy.max_age.and_then(|age| now.checked_sub(age));
    let mut count = 0;
    for segment in closed {
        let over_bytes = policy.max_bytes.is_some_and(|max| kept_bytes > max);
        let too_old = match (cutoff, segment.modified) {
            (Some(cutoff), Some(modified)) => modified < cutoff,
            _ => false,
        };
        let fully_consumed = min_committed.is_none_or(|min| segment.end <= min);
        if !(over_bytes || too_old) || !fully_consumed {
            break;
        }
        kept_bytes -= segment.size;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn seg(end: u64, size: u64, age: Duration, now: SystemTime) -> ClosedSegment {
        ClosedSegment {
            size,
            end,
            modified: Some(now - age),
        }
    }

    #[test]
    fn by_bytes_oldest_first() {
        let now = SystemTime::now();
        let closed = [
            seg(10, 100, HOUR, now),
            seg(20, 100, HOUR, now),
            seg(30, 100, HOUR, now),
        ];
        let policy = |max| Policy {
            max_bytes: Some(max),
            max_age: None,
        };
        assert_eq!(segments_to_delete(&closed, policy(300), None, now), 0);
        assert_eq!(segments_to_delete(&closed, policy(250), None, now), 1);
        assert_eq!(segments_to_delete(&closed, policy(200), None, now), 1);
        assert_eq!(segments_to_delete(&closed, policy(199), None, now), 2);
        assert_eq!(segments_to_delete(&closed, policy(0), None, now), 3);
        // A consumer at offset 15 still needs the second segment.
        assert_eq!(segments_to_delete(&closed, policy(0), Some(15), now), 1);
        assert_eq!(segments_to_delete(&closed, policy(0), Some(20), now), 2);
        assert_eq!(segments_to_delete(&closed, policy(0), Some(0), now), 0);
    }

    #[test]
    fn by_age_stops_at_first_young_segment() {
        let now = SystemTime::now();
        let closed = [
            seg(10, 1, 3 * HOUR, now),
            seg(20, 1, HOUR / 2, now),
            seg(30, 1, 3 * HOUR, now),
        ];
        let policy = Policy {
            max_bytes: None,
            max_age: Some(HOUR),
        };
        assert_eq!(segments_to_delete(&closed, policy, None, now), 1);
        let none = Policy {
            max_bytes: None,
            max_age: None,
        };
        assert_eq!(segments_to_delete(&closed, none, None, now), 0);
    }
}
