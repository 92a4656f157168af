/// The value of 1 to 19 ASCII digits, in one pass: 19 digits cannot overflow `u64`, so no
/// check is needed per digit. `None` for anything else (empty, longer, a sign, a dot), which
/// callers hand to a slower, general parser.
#[inline]
pub fn short_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_up_to_19_digits_and_nothing_else() {
        assert_eq!(short_u64(b"0"), Some(0));
        assert_eq!(short_u64(b"007"), Some(7));
        assert_eq!(
            short_u64(b"9999999999999999999"),
            Some(9_999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"12345678901234567890",
            b"-1",
            b"+1",
            b"1.5",
            b"1e3",
            b" 1",
        ] {
            assert_eq!(short_u64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
