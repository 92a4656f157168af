//! Where [`crate::Log::read`] puts what it reads.

/// A destination for records read from the log, in offset order.
pub trait RecordSink {
    /// Adds one record.
    fn push_record(&mut self, offset: u64, payload: &[u8]);
    /// Records held.
    fn record_count(&self) -> usize;
    /// Drops every record, keeping capacity.
    fn clear_records(&mut self);
}

/// One owned buffer per record: simple, and fine for tools and tests.
impl RecordSink for Vec<(u64, Vec<u8>)> {
    fn push_record(&mut self, offset: u64, payload: &[u8]) {
        self.push((offset, payload.to_vec()));
    }
    fn record_count(&self) -> usize {
        self.len()
    }
    fn clear_records(&mut self) {
        self.clear();
    }
}

/// Records read into one byte buffer, reused from read to read: a consumer reading a
/// million records a second allocates nothing per record.
#[derive(Debug, Default, Clone)]
pub struct Records {
    bytes: Vec<u8>,
    /// (offset, end of its payload in `bytes`); a payload starts where the previous ends.
    entries: Vec<(u64, usize)>,
}

impl Records {
    /// Records held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (offset, payload) in offset order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        let mut start = 0;
        self.entries.iter().map(move |&(offset, end)| {
            let payload = &self.bytes[start..end];
            start = end;
            (offset, payload)
        })
    }
}

impl RecordSink for Records {
    fn push_record(&mut self, offset: u64, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.entries.push((offset, self.bytes.len()));
    }
    fn record_count(&self) -> usize {
        self.entries.len()
    }
    fn clear_records(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_payloads_apart_and_reuse_the_buffer() {
        let mut r = Records::default();
        r.push_record(7, b"ab");
        r.push_record(8, b"");
        r.push_record(9, b"cde");
        let got: Vec<(u64, Vec<u8>)> = r.iter().map(|(o, p)| (o, p.to_vec())).collect();
        assert_eq!(
            got,
            vec![(7, b"ab".to_vec()), (8, vec![]), (9, b"cde".to_vec())]
        );
        let capacity = r.bytes.capacity();
        r.clear_records();
        assert!(r.is_empty());
        r.push_record(10, b"f");
        assert_eq!(r.len(), 1);
        assert_eq!(r.iter().next(), Some((10, &b"f"[..])));
        assert_eq!(r.bytes.capacity(), capacity);
    }
}
