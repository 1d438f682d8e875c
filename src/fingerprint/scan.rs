//! Sixteen bytes at a time: the two scans the fingerprinter makes over every
//! statement, with SSE2 (part of every x86_64 CPU) and a byte-by-byte twin elsewhere.
//!
//! A statement from a process list is about a hundred bytes. Finding each rare byte
//! with its own `memchr` call cost more in call set-up than in scanning (callgrind:
//! seven `memchr` and four `memmem` calls per statement were a third of the
//! fingerprinter's instructions), so one scan notes every class at once, and the
//! fused pass skips plain text sixteen bytes at a time.

/// What one scan of a statement found; each is "maybe": a pass whose trigger is
/// absent is skipped, one whose trigger is present runs and looks for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen(u8);

impl Seen {
    /// `/`: block comments, pt-table-checksum's chunk comment.
    pub const SLASH: u8 = 1;
    /// `--` or `#`: line comments.
    pub const LINE_COMMENT: u8 = 2;
    /// `"` or `\`: the passes one by one instead of the fused pass.
    pub const DQUOTE_OR_BACKSLASH: u8 = 4;
    /// Whitespace other than a space (`\t \n \x0B \x0C \r`), or two spaces in a row.
    pub const SPACE_TO_COLLAPSE: u8 = 8;
    /// A byte of a non-ASCII character.
    pub const NON_ASCII: u8 = 16;
    pub const ALL: Seen = Seen(31);

    pub fn has(self, class: u8) -> bool {
        self.0 & class != 0
    }
}

/// The classes of `Seen` present in `q`, byte by byte (the reference).
#[cfg(any(test, not(target_arch = "x86_64")))]
pub(super) fn classify_bytewise(q: &[u8]) -> Seen {
    let mut seen = 0;
    for (i, &b) in q.iter().enumerate() {
        seen |= match b {
            b'/' => Seen::SLASH,
            b'-' if q.get(i + 1) == Some(&b'-') => Seen::LINE_COMMENT,
            b'#' => Seen::LINE_COMMENT,
            b'"' | b'\\' => Seen::DQUOTE_OR_BACKSLASH,
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' => Seen::SPACE_TO_COLLAPSE,
            b' ' if q.get(i + 1) == Some(&b' ') => Seen::SPACE_TO_COLLAPSE,
            0x80.. => Seen::NON_ASCII,
            _ => 0,
        };
    }
    Seen(seen)
}

/// Whether the fused pass stops at `b`: a quote, a `?`, and what a number may start
/// with (digits and signs).
pub(super) fn is_stop(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'+' | b'-' | b'\'' | b'?')
}

/// The first position at or after `from` whose byte `is_stop`, or `q.len()`.
pub(super) fn next_stop_bytewise(q: &[u8], from: usize) -> usize {
    q.get(from..)
        .and_then(|rest| rest.iter().position(|b| is_stop(*b)))
        .map_or(q.len(), |at| from + at)
}

#[cfg(target_arch = "x86_64")]
pub(super) use sse2::{classify, next_stop};

#[cfg(not(target_arch = "x86_64"))]
pub(super) use {classify_bytewise as classify, next_stop_bytewise as next_stop};

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };

    use super::Seen;

    /// Sixteen bytes from `q[at..at + 16]`.
    #[target_feature(enable = "sse2")]
    fn load(q: &[u8], at: usize) -> __m128i {
        let chunk: &[u8; 16] = q[at..at + 16].try_into().expect("sixteen bytes");
        // SAFETY: `chunk` is sixteen readable bytes; the load is unaligned.
        unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) }
    }

    #[target_feature(enable = "sse2")]
    fn eq(v: __m128i, b: u8) -> __m128i {
        _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8))
    }

    /// Lanes whose byte lies in `lo..=hi` (both below 0x80): shifted so that the
    /// range starts at -128, one signed comparison tells.
    #[target_feature(enable = "sse2")]
    fn in_range(v: __m128i, lo: u8, hi: u8) -> __m128i {
        let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
        _mm_cmplt_epi8(shifted, _mm_set1_epi8((0x80 + (hi - lo) + 1) as i8))
    }

    /// The classes of sixteen bytes `v` (`next`: the sixteen from one byte on, for
    /// pairs like two spaces in a row), added to the accumulators in the order of
    /// `Seen`'s.
    #[target_feature(enable = "sse2")]
    fn accumulate(acc: &mut [__m128i; 5], v: __m128i, next: __m128i) {
        acc[0] = _mm_or_si128(acc[0], eq(v, b'/'));
        let two_dashes = _mm_and_si128(eq(v, b'-'), eq(next, b'-'));
        acc[1] = _mm_or_si128(acc[1], _mm_or_si128(two_dashes, eq(v, b'#')));
        acc[2] = _mm_or_si128(acc[2], _mm_or_si128(eq(v, b'"'), eq(v, b'\\')));
        let two_spaces = _mm_and_si128(eq(v, b' '), eq(next, b' '));
        acc[3] = _mm_or_si128(acc[3], _mm_or_si128(in_range(v, 0x09, 0x0d), two_spaces));
        // The sign bit is set in the bytes from 0x80 on.
        acc[4] = _mm_or_si128(acc[4], v);
    }

    #[target_feature(enable = "sse2")]
    fn classify_sse2(q: &[u8]) -> Seen {
        let mut acc = [_mm_setzero_si128(); 5];
        if q.len() < 17 {
            // Padded with zeros, which are in no class.
            let mut padded = [0u8; 33];
            padded[..q.len()].copy_from_slice(q);
            accumulate(&mut acc, load(&padded, 0), load(&padded, 1));
        } else {
            let mut at = 0;
            while at + 17 <= q.len() {
                accumulate(&mut acc, load(q, at), load(q, at + 1));
                at += 16;
            }
            // The rest again from seventeen bytes before the end (counting a byte twice
            // changes no "any"), then the last sixteen, which hold the very last byte.
            let last = q.len() - 17;
            accumulate(&mut acc, load(q, last), load(q, last + 1));
            accumulate(&mut acc, load(q, last + 1), _mm_setzero_si128());
        }
        let classes = [
            Seen::SLASH,
            Seen::LINE_COMMENT,
            Seen::DQUOTE_OR_BACKSLASH,
            Seen::SPACE_TO_COLLAPSE,
            Seen::NON_ASCII,
        ];
        let mut seen = 0;
        for (v, class) in acc.into_iter().zip(classes) {
            if _mm_movemask_epi8(v) != 0 {
                seen |= class;
            }
        }
        Seen(seen)
    }

    #[target_feature(enable = "sse2")]
    fn next_stop_sse2(q: &[u8], from: usize) -> usize {
        let mut at = from;
        while at + 16 <= q.len() {
            let v = load(q, at);
            let stops = _mm_or_si128(
                _mm_or_si128(in_range(v, b'0', b'9'), eq(v, b'\'')),
                _mm_or_si128(_mm_or_si128(eq(v, b'+'), eq(v, b'-')), eq(v, b'?')),
            );
            let mask = _mm_movemask_epi8(stops) as u32;
            if mask != 0 {
                return at + mask.trailing_zeros() as usize;
            }
            at += 16;
        }
        super::next_stop_bytewise(q, at)
    }

    /// The classes of `Seen` in `q`, like `classify_bytewise`.
    pub fn classify(q: &[u8]) -> Seen {
        // SAFETY: SSE2 is part of every x86_64 CPU.
        unsafe { classify_sse2(q) }
    }

    /// The first position at or after `from` whose byte `is_stop`, or `q.len()`.
    pub fn next_stop(q: &[u8], from: usize) -> usize {
        // SAFETY: SSE2 is part of every x86_64 CPU.
        unsafe { next_stop_sse2(q, from) }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn sixteen_at_a_time_agrees_with_byte_by_byte(
            q in prop::collection::vec(
                prop_oneof![
                    Just(b' '), Just(b'/'), Just(b'-'), Just(b'#'), Just(b'"'), Just(b'\\'),
                    Just(b'\''), Just(b'?'), Just(b'+'), Just(b'\t'), Just(0x0b), Just(b'\r'),
                    b'0'..=b'9', b'a'..=b'z', any::<u8>(),
                ],
                0..80,
            ),
            from in 0usize..90,
        ) {
            prop_assert_eq!(classify(&q), classify_bytewise(&q));
            prop_assert_eq!(next_stop(&q, from.min(q.len())), next_stop_bytewise(&q, from.min(q.len())));
        }
    }

    #[test]
    fn every_byte_value_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..40 {
                let mut q = vec![b'a'; 40];
                q[lane] = b;
                assert_eq!(classify(&q), classify_bytewise(&q), "byte {b:#x} at {lane}");
                assert_eq!(
                    next_stop(&q, 0),
                    next_stop_bytewise(&q, 0),
                    "byte {b:#x} at {lane}"
                );
            }
        }
    }
}
