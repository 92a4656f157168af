//! On-disk record framing.
//!
//! Each record is `[u32 length LE][u32 crc32 LE][payload]`. The crc covers the record's offset
//! (u64 LE) followed by the payload, so a record copied or replayed at the wrong position fails
//! its check just like a flipped bit does. Offsets themselves are not stored: a segment's base
//! offset (its file name) plus the record's index gives it.

/// Largest payload accepted by an append; larger records are rejected, and a length field above
/// it on disk is treated as corruption.
pub const MAX_RECORD_BYTES: usize = 16 << 20;

/// Bytes of framing in front of every payload.
pub(crate) const HEADER_LEN: usize = 8;

/// crc32 of `offset` (u64 LE) followed by `payload`.
pub(crate) fn checksum(offset: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&offset.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the framed record to `out`. The caller has checked `payload.len()`.
pub(crate) fn encode(offset: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(offset, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Framed size of a payload of `len` bytes.
pub(crate) fn framed_len(len: usize) -> u64 {
    (HEADER_LEN + len) as u64
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// A whole record whose crc matched (or was not checked); the payload is
    /// `buf[HEADER_LEN..HEADER_LEN + len]`.
    Record { len: usize },
    /// The buffer ends before the record does; `total` bytes are needed, if known (a header
    /// needs [`HEADER_LEN`]).
    Incomplete { total: usize },
    /// The length field is larger than [`MAX_RECORD_BYTES`].
    BadLength,
    /// The crc does not match the expected offset and payload.
    BadCrc,
}

/// Decodes the record at the start of `buf`, expected to have offset `offset`. With
/// `verify == false` the crc is not computed; callers use that only to skip records they
/// will not return.
pub(crate) fn decode(buf: &[u8], offset: u64, verify: bool) -> Decoded {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Decoded::Incomplete { total: HEADER_LEN };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD_BYTES {
        return Decoded::BadLength;
    }
    let total = HEADER_LEN + len;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Decoded::Incomplete { total };
    };
    if verify && checksum(offset, payload) != crc {
        return Decoded::BadCrc;
    }
    Decoded::Record { len }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(offset: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(offset, payload, &mut buf);
        buf
    }

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", b"hello world"] {
            let buf = framed(7, payload);
            assert_eq!(buf.len() as u64, framed_len(payload.len()));
            assert_eq!(
                decode(&buf, 7, true),
                Decoded::Record { len: payload.len() }
            );
            assert_eq!(&buf[HEADER_LEN..], payload);
        }
    }

    #[test]
    fn crc_binds_the_offset() {
        let buf = framed(7, b"abc");
        assert_eq!(decode(&buf, 8, true), Decoded::BadCrc);
        assert_eq!(decode(&buf, 8, false), Decoded::Record { len: 3 });
    }

    #[test]
    fn empty_payload_of_zeros_is_not_a_record() {
        // A zero-filled tail (file extended, data never written) must not parse.
        assert_eq!(decode(&[0u8; 8], 0, true), Decoded::BadCrc);
        assert_eq!(decode(&[0u8; 8], 12345, true), Decoded::BadCrc);
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let buf = framed(3, b"payload");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let decoded = decode(&bad, 3, true);
                assert!(
                    !matches!(decoded, Decoded::Record { .. }),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn short_and_absurd_input() {
        let buf = framed(0, b"abcdef");
        assert_eq!(
            decode(&buf[..5], 0, true),
            Decoded::Incomplete { total: HEADER_LEN }
        );
        assert_eq!(
            decode(&buf[..10], 0, true),
            Decoded::Incomplete { total: 14 }
        );
        let mut absurd = buf.clone();
        absurd[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&absurd, 0, true), Decoded::BadLength);
    }
}
