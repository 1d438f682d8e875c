//! Sixteen bytes at a time: the two scans the fingerprinter makes over every
//! statement, with SSE2 (part of every x86_64 CPU) and a byte-by-byte twin elsewhere;
//! the classifying scan thirty-two at a time with AVX2 where the CPU has it (on an
//! Intel Xeon with AVX2: 1,000 statements 158.6 → 145.0 µs, the 41.9 MB corpus
//! 594.5 → 636.1 MB/s).
//!
//! A statement from a process list is about a hundred bytes. Finding each rare byte
//! with its own `memchr` call cost more in call set-up than in scanning (callgrind:
//! seven `memchr` and four `memmem` calls per statement were a third of the
//! fingerprinter's instructions), so one scan notes every class at once, and the
//! fused pass skips plain text sixteen bytes at a time.

/// What one scan of a statement found; each is "maybe": a pass whose trigger is
/// absent is skipped, one whose trigger is present runs and looks for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen(u16);

impl Seen {
    /// `/`: block comments, pt-table-checksum's chunk comment.
    pub const SLASH: u16 = 1;
    /// `--` or `#`: line comments.
    pub const LINE_COMMENT: u16 = 1 << 1;
    /// `"` or `\`: the passes one by one instead of the fused pass.
    pub const DQUOTE_OR_BACKSLASH: u16 = 1 << 2;
    /// Whitespace other than a space (`\t \n \x0B \x0C \r`), or two spaces in a row.
    pub const SPACE_TO_COLLAPSE: u16 = 1 << 3;
    /// A byte of a non-ASCII character.
    pub const NON_ASCII: u16 = 1 << 4;
    /// `(`: lists after IN and VALUES.
    pub const PAREN: u16 = 1 << 5;
    /// The keywords, in either case, by their first and last letters: `n..l`,
    /// `u...n`, `l...t`, `o......y`. They hold for the text as it is; removing a
    /// comment or an escaped quote, or collapsing whitespace, may join the pieces of
    /// one (`nu/**/ll`), so the fingerprinter trusts them only where none of that
    /// happened.
    pub const MAYBE_NULL: u16 = 1 << 6;
    pub const MAYBE_UNION: u16 = 1 << 7;
    pub const MAYBE_LIMIT: u16 = 1 << 8;
    pub const MAYBE_ORDER_BY: u16 = 1 << 9;
    pub const ALL: Seen = Seen(u16::MAX);

    pub fn has(self, class: u16) -> bool {
        self.0 & class != 0
    }
}

/// The keywords of `Seen`: first letter, distance to the last, last letter (lower
/// case; a byte is compared with `0x20` set, which folds ASCII letters only). Both
/// scans take them from here.
const KEYWORDS: [(u8, usize, u8, u16); 4] = [
    (b'n', 3, b'l', Seen::MAYBE_NULL),
    (b'u', 4, b'n', Seen::MAYBE_UNION),
    (b'l', 4, b't', Seen::MAYBE_LIMIT),
    (b'o', 7, b'y', Seen::MAYBE_ORDER_BY),
];

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
            b'(' => Seen::PAREN,
            0x80.. => Seen::NON_ASCII,
            _ => 0,
        };
        for (first, distance, last, class) in KEYWORDS {
            if b | 0x20 == first && q.get(i + distance).is_some_and(|l| l | 0x20 == last) {
                seen |= class;
            }
        }
    }
    Seen(seen)
}

/// Whether the fused pass stops at `b`: a quote, a `?`, and what a number may start
/// with (`NUMBER_START`: digits and signs). The SSE2 scan tests the same bytes, and
/// the tests hold it to this.
pub(super) fn is_stop(b: u8) -> bool {
    super::NUMBER_START[usize::from(b)] || b == b'\'' || b == b'?'
}

/// The first position at or after `from` whose byte `is_stop`, or `q.len()`.
pub(super) fn next_stop_bytewise(q: &[u8], from: usize) -> usize {
    q.get(from..)
        .and_then(|rest| rest.iter().position(|b| is_stop(*b)))
        .map_or(q.len(), |at| from + at)
}

/// Bytes a class's pairs look ahead: the farthest last letter of `KEYWORDS`.
#[cfg(target_arch = "x86_64")]
const AHEAD: usize = {
    let mut most = 1;
    let mut k = 0;
    while k < KEYWORDS.len() {
        if KEYWORDS[k].1 > most {
            most = KEYWORDS[k].1;
        }
        k += 1;
    }
    most
};

/// The classes in the order of `classes_found!`'s vectors: five of single bytes and
/// pairs, then `KEYWORDS`, then non-ASCII.
#[cfg(target_arch = "x86_64")]
const CLASSES: [u16; 10] = [
    Seen::SLASH,
    Seen::LINE_COMMENT,
    Seen::DQUOTE_OR_BACKSLASH,
    Seen::SPACE_TO_COLLAPSE,
    Seen::PAREN,
    KEYWORDS[0].3,
    KEYWORDS[1].3,
    KEYWORDS[2].3,
    KEYWORDS[3].3,
    Seen::NON_ASCII,
];

/// The vectors of `CLASSES`, in its order, for the bytes `$v` (and `$next`, the
/// same bytes one further on), written once for both vector widths: `$or` and
/// `$eq` are the width's, `$pair`, `$in_range` and `$keyword` its helpers.
#[cfg(target_arch = "x86_64")]
macro_rules! classes_found {
    ($v:ident, $next:ident, $or:ident, $eq:ident, $pair:ident, $in_range:ident, $keyword:ident) => {
        [
            $eq($v, b'/'),
            $or($pair($v, b'-', $next, b'-'), $eq($v, b'#')),
            $or($eq($v, b'"'), $eq($v, b'\\')),
            $or($in_range($v, 0x09, 0x0d), $pair($v, b' ', $next, b' ')),
            $eq($v, b'('),
            $keyword(0),
            $keyword(1),
            $keyword(2),
            $keyword(3),
            $v,
        ]
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) use sse2::next_stop;

/// The classes of `Seen` in `q`, like `classify_bytewise`: thirty-two bytes at a
/// time where the CPU has AVX2 (told once, then read from a cached flag), sixteen
/// with SSE2 elsewhere.
#[cfg(target_arch = "x86_64")]
pub(super) fn classify(q: &[u8]) -> Seen {
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        unsafe { avx2::classify(q) }
    } else {
        sse2::classify(q)
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) use {classify_bytewise as classify, next_stop_bytewise as next_stop};

#[cfg(target_arch = "x86_64")]
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };

    use super::{AHEAD, CLASSES, KEYWORDS, Seen};

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

    /// Adds what the sixteen bytes at `q[at..]` hold to `acc`, one vector per class
    /// of `CLASSES` (for non-ASCII the bytes themselves: their top bit tells).
    #[target_feature(enable = "sse2")]
    fn accumulate(acc: &mut [__m128i; 10], q: &[u8], at: usize) {
        assert!(at + 16 + AHEAD <= q.len());
        // SAFETY: every load reads sixteen bytes from at most `at + AHEAD`, which
        // the assertion keeps inside `q`; the loads are unaligned.
        let load = |ahead: usize| unsafe { _mm_loadu_si128(q.as_ptr().add(at + ahead).cast()) };
        let v = load(0);
        let next = load(1);
        // Letters compared with 0x20 set: either case.
        let fold = |x: __m128i| _mm_or_si128(x, _mm_set1_epi8(0x20));
        let lower = fold(v);
        let pair = |a: __m128i, x: u8, b: __m128i, y: u8| _mm_and_si128(eq(a, x), eq(b, y));
        let keyword = |k: usize| {
            let (first, distance, last, _) = KEYWORDS[k];
            pair(lower, first, fold(load(distance)), last)
        };
        let found = classes_found!(v, next, _mm_or_si128, eq, pair, in_range, keyword);
        for (a, f) in acc.iter_mut().zip(found) {
            *a = _mm_or_si128(*a, f);
        }
    }

    #[target_feature(enable = "sse2")]
    fn classify_sse2(q: &[u8]) -> Seen {
        let mut acc = [_mm_setzero_si128(); 10];
        let mut at = 0;
        while at + 16 + AHEAD <= q.len() {
            accumulate(&mut acc, q, at);
            at += 16;
        }
        // The rest (fewer than 16 + AHEAD bytes) padded with zeros, which are in no
        // class and no keyword's letter.
        let mut rest = [0u8; 2 * 16 + AHEAD];
        rest[..q.len() - at].copy_from_slice(&q[at..]);
        accumulate(&mut acc, &rest, 0);
        if q.len() - at > 16 {
            accumulate(&mut acc, &rest, 16);
        }
        let mut seen = 0;
        for (v, class) in acc.into_iter().zip(CLASSES) {
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

/// `classify` thirty-two bytes at a time: the same classes, tests and padding as
/// the SSE2 scan, in vectors twice as wide.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8,
        _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
        _mm256_setzero_si256,
    };

    use super::{AHEAD, CLASSES, KEYWORDS, Seen};

    #[target_feature(enable = "avx2")]
    fn eq(v: __m256i, b: u8) -> __m256i {
        _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b as i8))
    }

    /// Lanes whose byte lies in `lo..=hi` (both below 0x80), as in the SSE2 scan:
    /// shifted so that the range starts at -128, one signed comparison tells.
    #[target_feature(enable = "avx2")]
    fn in_range(v: __m256i, lo: u8, hi: u8) -> __m256i {
        let shifted = _mm256_add_epi8(v, _mm256_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
        _mm256_cmpgt_epi8(_mm256_set1_epi8((0x80 + (hi - lo) + 1) as i8), shifted)
    }

    /// Adds what the thirty-two bytes at `q[at..]` hold to `acc`, one vector per
    /// class of `CLASSES`.
    #[target_feature(enable = "avx2")]
    fn accumulate(acc: &mut [__m256i; 10], q: &[u8], at: usize) {
        assert!(at + 32 + AHEAD <= q.len());
        // SAFETY: every load reads thirty-two bytes from at most `at + AHEAD`, which
        // the assertion keeps inside `q`; the loads are unaligned.
        let load = |ahead: usize| unsafe { _mm256_loadu_si256(q.as_ptr().add(at + ahead).cast()) };
        let v = load(0);
        let next = load(1);
        let fold = |x: __m256i| _mm256_or_si256(x, _mm256_set1_epi8(0x20));
        let lower = fold(v);
        let pair = |a: __m256i, x: u8, b: __m256i, y: u8| _mm256_and_si256(eq(a, x), eq(b, y));
        let keyword = |k: usize| {
            let (first, distance, last, _) = KEYWORDS[k];
            pair(lower, first, fold(load(distance)), last)
        };
        let found = classes_found!(v, next, _mm256_or_si256, eq, pair, in_range, keyword);
        for (a, f) in acc.iter_mut().zip(found) {
            *a = _mm256_or_si256(*a, f);
        }
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn classify(q: &[u8]) -> Seen {
        let mut acc = [_mm256_setzero_si256(); 10];
        let mut at = 0;
        while at + 32 + AHEAD <= q.len() {
            accumulate(&mut acc, q, at);
            at += 32;
        }
        // The rest (fewer than 32 + AHEAD bytes) padded with zeros, which are in no
        // class and no keyword's letter.
        let mut rest = [0u8; 2 * 32 + AHEAD];
        rest[..q.len() - at].copy_from_slice(&q[at..]);
        accumulate(&mut acc, &rest, 0);
        if q.len() - at > 32 {
            accumulate(&mut acc, &rest, 32);
        }
        let mut seen = 0;
        for (v, class) in acc.into_iter().zip(CLASSES) {
            if _mm256_movemask_epi8(v) != 0 {
                seen |= class;
            }
        }
        Seen(seen)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `classify` and every vector scan behind it that this CPU can run: each must
    /// agree with the byte-by-byte reference.
    fn assert_every_classify_agrees(q: &[u8], what: &str) {
        let want = classify_bytewise(q);
        assert_eq!(classify(q), want, "{what}");
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(sse2::classify(q), want, "SSE2, {what}");
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                assert_eq!(unsafe { avx2::classify(q) }, want, "AVX2, {what}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn sixteen_at_a_time_agrees_with_byte_by_byte(
            q in prop::collection::vec(
                prop_oneof![
                    Just(b' '), Just(b'/'), Just(b'-'), Just(b'#'), Just(b'"'), Just(b'\\'),
                    Just(b'\''), Just(b'?'), Just(b'+'), Just(b'\t'), Just(0x0b), Just(b'\r'),
                    Just(b'('), Just(b'n'), Just(b'L'), Just(b'u'), Just(b'N'), Just(b't'),
                    Just(b'O'), Just(b'y'), Just(b'l'),
                    b'0'..=b'9', b'a'..=b'z', any::<u8>(),
                ],
                0..80,
            ),
            from in 0usize..90,
        ) {
            assert_every_classify_agrees(&q, &format!("{q:?}"));
            prop_assert_eq!(next_stop(&q, from.min(q.len())), next_stop_bytewise(&q, from.min(q.len())));
        }
    }

    #[test]
    fn keywords_are_seen_at_every_position_of_every_length() {
        for (word, class) in [
            ("null", Seen::MAYBE_NULL),
            ("UNION", Seen::MAYBE_UNION),
            ("Limit", Seen::MAYBE_LIMIT),
            ("ORDER BY", Seen::MAYBE_ORDER_BY),
            ("--", Seen::LINE_COMMENT),
            ("  ", Seen::SPACE_TO_COLLAPSE),
        ] {
            for len in word.len()..70 {
                for at in 0..=len - word.len() {
                    let mut q = vec![b'a'; len];
                    q[at..at + word.len()].copy_from_slice(word.as_bytes());
                    let seen = classify(&q);
                    assert!(seen.has(class), "{word:?} at {at} of {len}");
                    assert_every_classify_agrees(&q, &format!("{word:?} at {at} of {len}"));
                }
            }
        }
    }

    #[test]
    fn every_byte_value_in_every_lane() {
        for b in 0..=255u8 {
            for lane in 0..80 {
                let mut q = vec![b'a'; 80];
                q[lane] = b;
                assert_every_classify_agrees(&q, &format!("byte {b:#x} at {lane}"));
                assert_eq!(
                    next_stop(&q, 0),
                    next_stop_bytewise(&q, 0),
                    "byte {b:#x} at {lane}"
                );
            }
        }
    }
}
