//! SQL fingerprints compatible with Percona Toolkit's `pt-fingerprint`.
//!
//! A fingerprint is the statement with every literal replaced by `?`, lower-cased,
//! whitespace collapsed and comments removed, so that `SELECT * FROM t WHERE id = 1`
//! and `select * from t where id=2 -- retry` group together. Processlist SQL is often
//! truncated, so there is no parser: like pt-fingerprint (`QueryRewriter::fingerprint`,
//! releases 3.0–3.3.1) this is a fixed sequence of textual rewrites, each of which is
//! written here as one linear scan over bytes instead of a backtracking regex. The
//! comment above each pass names the Perl expression it reproduces.
//!
//! Where pt-fingerprint is plainly wrong we deliberately do better; these are the
//! cases its own test corpus leaves out (see `tests/fingerprint_cases.rs`):
//! - `''` and `""` inside a string are escaped quotes: `'O''Brien'` is one `?`, not `??`;
//! - `+` and `-` are numbers only when a digit follows: `balance - 10` is `balance - ?`;
//! - hex, exponent and bit literals are recognised in upper case too (`0xFF`, `1E10`,
//!   `X'AB'`, `B'01'`);
//! - digits inside a name only replace the digits: `tab1` is `tab?` (not `ta?`),
//!   `t1.id` is `t?.id` (not `t?id`), `utf8mb4` is `utf?mb?`.
//!
//! Every operation works on ASCII bytes only and never splits a UTF-8 sequence, so
//! the result is valid UTF-8 whenever the input is; no input panics.

mod scan;

use std::sync::LazyLock;

use memchr::memmem::Finder;
use scan::Seen;

// Searchers built once: building one per call was a tenth of the time on short
// statements.
static COMMENT_OPEN: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"/*"));
static COMMENT_CLOSE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"*/"));
static NULL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"null"));
static UNION: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"union"));
static SELECT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"select"));
static LIMIT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"limit ?"));
static SPACE_ASC: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b" asc"));

/// The fingerprint of one statement.
pub fn fingerprint(sql: &str) -> String {
    let mut fp = Fingerprinter::default();
    fp.fingerprint(sql).to_owned()
}

/// Reusable scratch buffers: fingerprinting many statements with one
/// `Fingerprinter` allocates only when a statement is longer than any before it.
#[derive(Default)]
pub struct Fingerprinter {
    a: Vec<u8>,
    b: Vec<u8>,
    result: String,
    /// Always take the pass-by-pass road (for the tests that compare the two).
    sequential: bool,
}

impl Fingerprinter {
    /// A fingerprinter that never fuses passes: the reference the fused road is
    /// tested against.
    #[doc(hidden)]
    pub fn sequential() -> Fingerprinter {
        Fingerprinter {
            sequential: true,
            ..Fingerprinter::default()
        }
    }

    /// The fingerprint of `sql`, borrowed until the next call.
    pub fn fingerprint(&mut self, sql: &str) -> &str {
        let bytes = sql.as_bytes();
        self.result.clear();
        // One scan for the rare bytes that trigger passes; the reference road runs
        // every pass whatever it found.
        let seen = if self.sequential {
            Seen::ALL
        } else {
            scan::classify(bytes)
        };
        if let Some(early) = early_return(bytes, seen) {
            self.result.push_str(&String::from_utf8_lossy(&early));
            return &self.result;
        }
        let mut cur = std::mem::take(&mut self.a);
        let mut next = std::mem::take(&mut self.b);
        cur.clear();
        cur.extend_from_slice(shorten_multi_row_insert(bytes));

        // Each pass reads `cur` and writes `next`; `step!` swaps them, skipping a pass
        // whose trigger byte is absent (most statements have no comment, no `"`, ...),
        // and tells whether the pass changed anything.
        macro_rules! step {
            ($pass:ident) => {{
                next.clear();
                let ran = $pass(&cur, &mut next);
                if ran {
                    std::mem::swap(&mut cur, &mut next);
                }
                ran
            }};
        }
        // Removing a comment may leave two spaces side by side, and a block
        // comment's removal may join two dashes (`-/**/-`) into a line comment.
        let mut spaces = seen.has(Seen::SPACE_TO_COLLAPSE);
        if seen.has(Seen::SLASH) {
            spaces |= step!(strip_block_comments);
        }
        if seen.has(Seen::LINE_COMMENT) || spaces {
            spaces |= step!(strip_line_comments);
        }
        if let Some(use_stmt) = abstract_use(&cur) {
            self.result.push_str(&String::from_utf8_lossy(&use_stmt));
        } else {
            if seen.has(Seen::DQUOTE_OR_BACKSLASH) {
                // Dropping `\'` may leave two spaces side by side.
                spaces |= step!(strip_escaped_quotes);
                step!(replace_double_quoted);
                step!(replace_single_quoted);
                step!(replace_numbers);
                step!(fold_signs_and_dots);
            } else {
                // Without `"` and `\` the three passes give the same as one
                // left-to-right pass (the property tests hold them to it).
                step!(quotes_numbers_and_signs);
            }
            normalise_space_and_case(&mut cur, spaces);
            // The keywords as the scan found them, unless a removal or collapsed
            // whitespace may have joined one's pieces.
            let hints = if spaces || seen.has(Seen::DQUOTE_OR_BACKSLASH) {
                Seen::ALL
            } else {
                seen
            };
            if hints.has(Seen::MAYBE_NULL) {
                step!(replace_null);
            }
            if self.sequential {
                step!(collapse_in_values_reference);
            } else if hints.has(Seen::PAREN) {
                step!(collapse_in_values);
            }
            if hints.has(Seen::MAYBE_UNION) {
                step!(collapse_union);
            }
            if hints.has(Seen::MAYBE_LIMIT) {
                step!(abstract_limit);
            }
            if hints.has(Seen::MAYBE_ORDER_BY) {
                next.clear();
                // Without whitespace to collapse there was none but single spaces.
                if drop_order_by_asc(&cur, &mut next, !seen.has(Seen::SPACE_TO_COLLAPSE)) {
                    std::mem::swap(&mut cur, &mut next);
                }
            }
            // The result takes the buffer (every pass keeps UTF-8 valid, and ASCII
            // stays ASCII); the old result's buffer becomes scratch.
            let text = if seen.has(Seen::NON_ASCII) {
                String::from_utf8(cur).map_err(|e| e.into_bytes())
            } else {
                debug_assert!(cur.is_ascii());
                // SAFETY: the statement had no byte above 0x7F and every pass writes
                // ASCII only, so `cur` is ASCII, which is UTF-8.
                Ok(unsafe { String::from_utf8_unchecked(cur) })
            };
            match text {
                Ok(s) => {
                    cur = std::mem::replace(&mut self.result, s).into_bytes();
                }
                Err(bytes) => {
                    self.result.push_str(&String::from_utf8_lossy(&bytes));
                    cur = bytes;
                }
            }
        }
        self.a = cur;
        self.b = next;
        &self.result
    }
}

/// Perl's `\s` on a byte string: space, \t, \n, \x0B, \f, \r.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Perl's `\w` on a byte string: ASCII letters, digits and `_`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A byte that continues a name for our embedded-digit rule: `\w`, `$` and any
/// byte of a non-ASCII character (MySQL names may contain both).
fn is_name_byte(b: u8) -> bool {
    is_word(b) || b == b'$' || b >= 0x80
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

/// `\b` before position `i` when `hay[i]` is a word byte.
fn word_start(hay: &[u8], i: usize) -> bool {
    i == 0 || !is_word(hay[i - 1])
}

/// The statements pt-fingerprint recognises whole, checked on the raw text:
/// mysqldump's dump query, pt-table-checksum's chunk queries, `administrator command`
/// and `CALL name(...)`.
fn early_return(q: &[u8], seen: Seen) -> Option<Vec<u8>> {
    // m#\ASELECT /\*!40001 SQL_NO_CACHE \*/ \* FROM `#
    if q.starts_with(b"SELECT /*!40001 SQL_NO_CACHE */ * FROM `") {
        return Some(b"mysqldump".to_vec());
    }
    // m#/\*\w+\.\w+:[0-9]/[0-9]\*/#
    if seen.has(Seen::SLASH) && is_checksum_chunk_query(q) {
        return Some(b"percona-toolkit".to_vec());
    }
    // m/\Aadministrator command: /
    if q.starts_with(b"administrator command: ") {
        return Some(q.to_vec());
    }
    // m/\A\s*(call\s+\S+)\(/i  -> lc($1)
    call_name(q).map(|name| name.to_ascii_lowercase())
}

fn is_checksum_chunk_query(q: &[u8]) -> bool {
    // `/` is rare in SQL: a cheap scan rules most statements out.
    memchr::memchr(b'/', q).is_some()
        && COMMENT_OPEN.find_iter(q).any(|at| {
            let rest = &q[at + 2..];
            let word_run = |s: &[u8]| s.iter().take_while(|b| is_word(**b)).count();
            let n = word_run(rest);
            if n == 0 || rest.get(n) != Some(&b'.') {
                return false;
            }
            let rest = &rest[n + 1..];
            let m = word_run(rest);
            m > 0
                && matches!(rest.get(m..m + 6), Some([b':', d1, b'/', d2, b'*', b'/'])
                if d1.is_ascii_digit() && d2.is_ascii_digit())
        })
}

fn call_name(q: &[u8]) -> Option<&[u8]> {
    let start = q.iter().position(|b| !is_space(*b))?;
    let rest = &q[start..];
    if !starts_with_ci(rest, b"call") {
        return None;
    }
    let spaces = rest[4..].iter().take_while(|b| is_space(**b)).count();
    if spaces == 0 {
        return None;
    }
    let name_at = 4 + spaces;
    let run = rest[name_at..]
        .iter()
        .take_while(|b| !is_space(**b))
        .count();
    // `\S+` is greedy and backtracks to the last `(` of the run, leaving it at least
    // one byte: a run of fewer than two bytes cannot hold a name and a `(`.
    if run < 2 {
        return None;
    }
    let paren = rest[name_at + 1..name_at + run]
        .iter()
        .rposition(|b| *b == b'(')?;
    Some(&rest[..name_at + 1 + paren])
}

/// `\A((?:INSERT|REPLACE)(?: IGNORE)?\s+INTO.+?VALUES\s*\(.*?\))\s*,\s*\(` with /is:
/// a multi-row INSERT is cut after its first row (and loses any ON DUPLICATE KEY UPDATE).
fn shorten_multi_row_insert(q: &[u8]) -> &[u8] {
    let verb = if starts_with_ci(q, b"INSERT") {
        6
    } else if starts_with_ci(q, b"REPLACE") {
        7
    } else {
        return q;
    };
    let mut at = verb;
    if starts_with_ci(&q[at..], b" IGNORE") {
        at += 7;
    }
    let spaces = q[at..].iter().take_while(|b| is_space(**b)).count();
    if spaces == 0 || !starts_with_ci(&q[at + spaces..], b"INTO") {
        return q;
    }
    let into_end = at + spaces + 4;
    // `.+?VALUES`: the first VALUES (at least one byte after INTO) followed by `\s*\(`.
    let mut search = into_end + 1;
    let open = loop {
        let Some(v) = find_ci(q, b"VALUES", search) else {
            return q;
        };
        let after = v + 6;
        let spaces = q[after..].iter().take_while(|b| is_space(**b)).count();
        if q.get(after + spaces) == Some(&b'(') {
            break after + spaces + 1;
        }
        search = v + 1;
    };
    // `.*?\)` followed by `\s*,\s*\(`. A later VALUES would only start later, so the
    // first closing parenthesis with that suffix decides.
    for close in memchr::memchr_iter(b')', &q[open..]).map(|i| open + i) {
        let mut i = close + 1;
        while i < q.len() && is_space(q[i]) {
            i += 1;
        }
        if q.get(i) != Some(&b',') {
            continue;
        }
        i += 1;
        while i < q.len() && is_space(q[i]) {
            i += 1;
        }
        if q.get(i) == Some(&b'(') {
            return &q[..=close];
        }
    }
    q
}

fn find_ci(hay: &[u8], upper_needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() || upper_needle.is_empty() {
        return None;
    }
    let first = upper_needle[0];
    let lower = first.to_ascii_lowercase();
    let mut i = from;
    while let Some(off) = memchr::memchr2(first, lower, &hay[i..]) {
        let at = i + off;
        if starts_with_ci(&hay[at..], upper_needle) {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// `s#/\*[^!].*?\*/##gsm`: block comments (and optimizer hints) go, `/*!NNNNN ... */` stays.
/// The match runs through string literals too, as pt-fingerprint's does.
fn strip_block_comments(q: &[u8], out: &mut Vec<u8>) -> bool {
    if memchr::memchr(b'/', q).is_none() || COMMENT_OPEN.find(q).is_none() {
        return false;
    }
    let mut i = 0;
    let mut copied = 0;
    while let Some(off) = COMMENT_OPEN.find(&q[i..]) {
        let at = i + off;
        match q.get(at + 2) {
            Some(b'!') | None => {
                i = at + 1;
                continue;
            }
            Some(_) => {}
        }
        // A later `/*` would need a `*/` after an even later point: none if none here.
        let Some(end) = COMMENT_CLOSE.find(&q[at + 3..]) else {
            break;
        };
        out.extend_from_slice(&q[copied..at]);
        i = at + 3 + end + 2;
        copied = i;
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// `s/(?:--|#)[^'"\r\n]*(?=[\r\n]|\Z)//g`: a `--` or `#` comment running to the end of
/// its line; one that meets a quote first is left alone.
fn strip_line_comments(q: &[u8], out: &mut Vec<u8>) -> bool {
    if memchr::memchr2(b'-', b'#', q).is_none() {
        return false;
    }
    let mut i = 0;
    let mut copied = 0;
    while i < q.len() {
        match memchr::memchr2(b'-', b'#', &q[i..]) {
            Some(off) => i += off,
            None => break,
        }
        let open = match q[i] {
            b'#' => 1,
            b'-' if q.get(i + 1) == Some(&b'-') => 2,
            _ => {
                i += 1;
                continue;
            }
        };
        let body = &q[i + open..];
        let len = body
            .iter()
            .position(|b| matches!(b, b'\'' | b'"' | b'\r' | b'\n'))
            .unwrap_or(body.len());
        let end = i + open + len;
        if end < q.len() && matches!(q[end], b'\'' | b'"') {
            // Every comment start before the quote fails the same way.
            i = end;
            continue;
        }
        out.extend_from_slice(&q[copied..i]);
        copied = end;
        i = end;
    }
    if copied == 0 {
        return false; // no comment
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// `s/\Ause \S+\Z/use ?/i`: a statement that is exactly `USE db` (after comments went).
fn abstract_use(q: &[u8]) -> Option<Vec<u8>> {
    if !starts_with_ci(q, b"use ") {
        return None;
    }
    let rest = &q[4..];
    let name = rest.iter().take_while(|b| !is_space(**b)).count();
    let tail = &rest[name..];
    if name > 0 && (tail.is_empty() || tail == b"\n") {
        let mut out = b"use ?".to_vec();
        out.extend_from_slice(tail);
        Some(out)
    } else {
        None
    }
}

/// `s/\\["']//g`: backslash-escaped quotes disappear, both bytes.
fn strip_escaped_quotes(q: &[u8], out: &mut Vec<u8>) -> bool {
    if memchr::memchr(b'\\', q).is_none() {
        return false;
    }
    let mut i = 0;
    while i < q.len() {
        if q[i] == b'\\' && matches!(q.get(i + 1), Some(b'\'' | b'"')) {
            i += 2;
        } else {
            out.push(q[i]);
            i += 1;
        }
    }
    true
}

/// `s/".*?"/?/sg`, with `""` read as an escaped quote inside the string.
fn replace_double_quoted(q: &[u8], out: &mut Vec<u8>) -> bool {
    replace_quoted(q, out, b'"')
}

/// `s/'.*?'/?/sg`, with `''` read as an escaped quote inside the string.
fn replace_single_quoted(q: &[u8], out: &mut Vec<u8>) -> bool {
    replace_quoted(q, out, b'\'')
}

fn replace_quoted(q: &[u8], out: &mut Vec<u8>, quote: u8) -> bool {
    if memchr::memchr(quote, q).is_none() {
        return false;
    }
    let mut i = 0;
    while let Some(off) = memchr::memchr(quote, &q[i..]) {
        let open = i + off;
        let Some(close) = closing_quote(q, open + 1, quote) else {
            break; // unclosed (truncated): left as it is
        };
        out.extend_from_slice(&q[i..open]);
        // x'..' and b'..' literals: pt-fingerprint's `s/[xb.+-]\?/?/g` folds the prefix.
        if literal_prefix(&q[..open]) {
            out.pop();
        }
        out.push(b'?');
        i = close + 1;
    }
    out.extend_from_slice(&q[i..]);
    true
}

/// The position of the quote closing a string whose body starts at `from`.
fn closing_quote(q: &[u8], from: usize, quote: u8) -> Option<usize> {
    let mut i = from;
    loop {
        let at = i + memchr::memchr(quote, q.get(i..)?)?;
        if q.get(at + 1) == Some(&quote) {
            i = at + 2;
        } else {
            return Some(at);
        }
    }
}

/// Whether the text before a string ends in a hex or bit literal prefix (`x'`, `b'`).
fn literal_prefix(before: &[u8]) -> bool {
    match before {
        [.., prev, p] => matches!(p, b'x' | b'X' | b'b' | b'B') && !is_name_byte(*prev),
        [p] => matches!(p, b'x' | b'X' | b'b' | b'B'),
        [] => false,
    }
}

/// Pushes a `?`, folding a sign or a leading dot before it into it: what
/// `fold_signs_and_dots` does to every `?`.
fn push_placeholder(out: &mut Vec<u8>) {
    match out.last() {
        Some(b'+' | b'-') => {
            out.pop();
        }
        Some(b'.') if out.len() < 2 || !is_name_byte(out[out.len() - 2]) => {
            out.pop();
        }
        _ => {}
    }
    out.push(b'?');
}

/// `replace_single_quoted`, `replace_numbers` and `fold_signs_and_dots` in one
/// left-to-right pass, for text with no `"` and no `\`.
fn quotes_numbers_and_signs(q: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    let mut copied = 0;
    // After a quote without its closing quote, no later quote can close either.
    let mut quotes = true;
    while i < q.len() {
        i = scan::next_stop(q, i);
        let Some(&b) = q.get(i) else { break };
        match b {
            b'\'' if quotes => {
                let Some(close) = closing_quote(q, i + 1, b'\'') else {
                    quotes = false;
                    i += 1;
                    continue;
                };
                out.extend_from_slice(&q[copied..i]);
                if literal_prefix(&q[..i]) {
                    out.pop();
                }
                push_placeholder(out);
                i = close + 1;
                copied = i;
            }
            b'?' => {
                out.extend_from_slice(&q[copied..i]);
                push_placeholder(out);
                i += 1;
                copied = i;
            }
            b'\'' => i += 1,
            _ => {
                let starts = b.is_ascii_digit()
                    || match q.get(i + 1) {
                        Some(d) if d.is_ascii_digit() => true,
                        Some(b'.') => q.get(i + 2).is_some_and(u8::is_ascii_digit),
                        _ => false,
                    };
                if !starts {
                    i += 1;
                    continue;
                }
                let embedded = b.is_ascii_digit() && i > 0 && is_name_byte(q[i - 1]);
                let mut end = if embedded {
                    i + 1 + q[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count()
                } else {
                    literal_end(q, i)
                };
                // `1-x'AB'`: the passes one by one fold `x'AB'` first, so the
                // number stops before the `x`.
                if quotes
                    && q.get(end) == Some(&b'\'')
                    && end > i + 1
                    && literal_prefix(&q[..end])
                    && closing_quote(q, end + 1, b'\'').is_some()
                {
                    end -= 1;
                }
                out.extend_from_slice(&q[copied..i]);
                push_placeholder(out);
                i = end;
                copied = end;
            }
        }
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// Digits and signs: the bytes a number may start with.
static NUMBER_START: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = b'0';
    while b <= b'9' {
        t[b as usize] = true;
        b += 1;
    }
    t[b'+' as usize] = true;
    t[b'-' as usize] = true;
    t
};

/// `s/[0-9+-][0-9a-f.xb+-]*/?/g`: numbers become `?`. A sign starts a number only
/// when a digit (or `.digit`) follows; digits inside a name (`t1`, `utf8mb4`) are
/// replaced alone.
fn replace_numbers(q: &[u8], out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    let mut copied = 0;
    while i < q.len() {
        // Skip to the next byte that may start a number.
        while i < q.len() && !NUMBER_START[q[i] as usize] {
            i += 1;
        }
        let Some(&b) = q.get(i) else { break };
        let starts = b.is_ascii_digit()
            || (matches!(b, b'+' | b'-')
                && match q.get(i + 1) {
                    Some(d) if d.is_ascii_digit() => true,
                    Some(b'.') => q.get(i + 2).is_some_and(u8::is_ascii_digit),
                    _ => false,
                });
        if !starts {
            i += 1;
            continue;
        }
        let embedded = b.is_ascii_digit() && i > 0 && is_name_byte(q[i - 1]);
        let mut end = i + 1;
        if embedded {
            while end < q.len() && q[end].is_ascii_digit() {
                end += 1;
            }
        } else {
            end = literal_end(q, i);
        }
        out.extend_from_slice(&q[copied..i]);
        out.push(b'?');
        copied = end;
        i = end;
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// The end of the number literal starting at `start`: pt-fingerprint's
/// `[0-9a-f.xb+-]*`, plus the upper-case spellings of real literals only (`0xFF`,
/// `0XFF`, `0B1`, `1E10`), so that `1.DESC` keeps its `desc`.
fn literal_end(q: &[u8], start: usize) -> usize {
    let mut end = start + 1;
    // Most numbers are plain digits; digits never change what may follow them.
    while end < q.len() && q[end].is_ascii_digit() {
        end += 1;
    }
    if end == q.len()
        || !matches!(q[end], b'a'..=b'f' | b'A'..=b'F' | b'.' | b'x' | b'X' | b'+' | b'-')
    {
        return end;
    }

    let mut hex = false;
    while end < q.len() {
        let b = q[end];
        let pt_class = b.is_ascii_digit() || matches!(b, b'a'..=b'f' | b'.' | b'x' | b'+' | b'-');
        let upper = match b {
            b'X' | b'B' => end == start + 1 && q[start] == b'0',
            b'E' => match q.get(end + 1) {
                Some(d) if d.is_ascii_digit() => true,
                Some(b'+' | b'-') => q.get(end + 2).is_some_and(u8::is_ascii_digit),
                _ => false,
            },
            b'A'..=b'F' => hex,
            _ => false,
        };
        if !(pt_class || upper) {
            break;
        }
        if end == start + 1 && q[start] == b'0' && matches!(b, b'x' | b'X') {
            // Upper-case hex digits only in a clean literal: `0xFF`, not `0xffAND`.
            let digits = q[end + 1..]
                .iter()
                .take_while(|c| c.is_ascii_hexdigit())
                .count();
            hex = !q.get(end + 1 + digits).is_some_and(|c| is_name_byte(*c));
        }
        end += 1;
    }
    end
}

/// `s/[xb.+-]\?/?/g`: a sign or a leading dot folds into the `?` after it (`.5`, `-?`).
/// The `x`/`b` prefixes were folded with their strings already; a dot after a name
/// (`t.?`) stays.
fn fold_signs_and_dots(q: &[u8], out: &mut Vec<u8>) -> bool {
    let mut copied = 0;
    for at in memchr::memchr_iter(b'?', q).filter(|at| *at > 0) {
        let folds = match q[at - 1] {
            b'+' | b'-' => true,
            b'.' => at < 2 || !is_name_byte(q[at - 2]),
            _ => false,
        };
        if folds {
            out.extend_from_slice(&q[copied..at - 1]);
            copied = at;
        }
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// `s/\A\s+//; chomp; tr[ \n\t\r\f][ ]s; lc`: trim the front, drop one final newline,
/// collapse runs of whitespace to one space, lower-case ASCII letters. `spaces` says
/// whether there may be whitespace to collapse (most statements have single spaces
/// only).
fn normalise_space_and_case(out: &mut Vec<u8>, spaces: bool) {
    let start = out.iter().position(|b| !is_space(*b)).unwrap_or(out.len());
    out.drain(..start);
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out.make_ascii_lowercase();
    if !spaces {
        return;
    }
    let mut w = 0;
    let mut in_space = false;
    for r in 0..out.len() {
        let b = out[r];
        if matches!(b, b' ' | b'\n' | b'\t' | b'\r' | 0x0c) {
            if !in_space {
                out[w] = b' ';
                w += 1;
            }
            in_space = true;
        } else {
            out[w] = b;
            w += 1;
            in_space = false;
        }
    }
    out.truncate(w);
}

/// `s/\bnull\b/?/g`.
fn replace_null(q: &[u8], out: &mut Vec<u8>) -> bool {
    if NULL.find(q).is_none() {
        return false;
    }
    let mut copied = 0;
    for at in NULL.find_iter(q) {
        if at < copied {
            continue;
        }
        let end = at + 4;
        if word_start(q, at) && (end == q.len() || !is_word(q[end])) {
            out.extend_from_slice(&q[copied..at]);
            out.push(b'?');
            copied = end;
        }
    }
    if copied == 0 {
        return false; // no whole word `null`
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// `s/\b(in|values?)(?:[\s,]*\([\s?,]*\))+/$1(?+)/gx`: lists of placeholders collapse.
/// Found from each `(` that opens a group of placeholders, looking back for the
/// keyword: `(` is rarer than the keywords' letters.
fn collapse_in_values(q: &[u8], out: &mut Vec<u8>) -> bool {
    let mut copied = 0;
    for open in memchr::memchr_iter(b'(', q) {
        if open < copied || placeholder_group(q, open).is_none() {
            continue;
        }
        let mut k = open;
        while k > copied && (is_space(q[k - 1]) || q[k - 1] == b',') {
            k -= 1;
        }
        let before = &q[copied..k];
        let keyword = [&b"values"[..], b"value", b"in"]
            .into_iter()
            .any(|kw| before.ends_with(kw) && word_start(q, k - kw.len()));
        if !keyword {
            continue;
        }
        let mut end = k;
        while let Some(next) = placeholder_group(q, end) {
            end = next;
        }
        out.extend_from_slice(&q[copied..k]);
        out.extend_from_slice(b"(?+)");
        copied = end;
    }
    if copied == 0 {
        return false; // nothing collapsed
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// The reference for `collapse_in_values` (scans every `i` and `v`):
/// `s/\b(in|values?)(?:[\s,]*\([\s?,]*\))+/$1(?+)/gx`: lists of placeholders collapse.
fn collapse_in_values_reference(q: &[u8], out: &mut Vec<u8>) -> bool {
    if memchr::memchr(b'(', q).is_none() {
        return false;
    }
    let mut i = 0;
    let mut copied = 0;
    while i < q.len() {
        match memchr::memchr2(b'i', b'v', &q[i..]) {
            Some(off) => i += off,
            None => break,
        }
        let keyword = match q[i] {
            b'i' if q[i..].starts_with(b"in") => 2,
            b'v' if q[i..].starts_with(b"values") => 6,
            b'v' if q[i..].starts_with(b"value") => 5,
            _ => 0,
        };
        if keyword == 0 || !word_start(q, i) {
            i += 1;
            continue;
        }
        let mut end = i + keyword;
        while let Some(next) = placeholder_group(q, end) {
            end = next;
        }
        if end == i + keyword {
            i += 1;
            continue;
        }
        out.extend_from_slice(&q[copied..i + keyword]);
        out.extend_from_slice(b"(?+)");
        copied = end;
        i = end;
    }
    if copied == 0 {
        return false; // nothing collapsed
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// `[\s,]*\([\s?,]*\)` at `at`: the end of the group, if it matches.
fn placeholder_group(q: &[u8], at: usize) -> Option<usize> {
    let mut i = at;
    while i < q.len() && (is_space(q[i]) || q[i] == b',') {
        i += 1;
    }
    if q.get(i) != Some(&b'(') {
        return None;
    }
    i += 1;
    while i < q.len() && (is_space(q[i]) || matches!(q[i], b'?' | b',')) {
        i += 1;
    }
    (q.get(i) == Some(&b')')).then_some(i + 1)
}

/// `s/\b(select\s.*?)(?:(\sunion(?:\sall)?)\s\1)+/$1 \/*repeat$2*\//g`: a SELECT
/// repeated with UNION [ALL] is written once.
fn collapse_union(q: &[u8], out: &mut Vec<u8>) -> bool {
    if UNION.find(q).is_none() {
        return false;
    }
    let mut i = 0;
    let mut copied = 0;
    while let Some(off) = SELECT.find(&q[i..]) {
        let at = i + off;
        if !word_start(q, at) || !q.get(at + 6).copied().is_some_and(is_space) {
            i = at + 1;
            continue;
        }
        match repeated_union(q, at) {
            Some((head_end, union, end)) => {
                out.extend_from_slice(&q[copied..head_end]);
                out.extend_from_slice(b" /*repeat");
                out.extend_from_slice(union);
                out.extend_from_slice(b"*/");
                copied = end;
                i = end;
            }
            None => i = at + 1,
        }
    }
    out.extend_from_slice(&q[copied..]);
    true
}

/// For a `select\s` at `start`: the end of the shortest head that is repeated after
/// `\sunion[\sall]\s`, the last union keyword (with its leading space) and the end of
/// the repetitions.
fn repeated_union(q: &[u8], start: usize) -> Option<(usize, &[u8], usize)> {
    let min_head_end = start + 7;
    for u in UNION.find_iter(q.get(min_head_end + 1..)?) {
        let head_end = min_head_end + 1 + u - 1;
        if !is_space(q[head_end]) {
            continue;
        }
        let head = &q[start..head_end];
        if let Some((union, mut end)) = union_then(q, head_end, head) {
            let mut last = union;
            while let Some((union, next)) = union_then(q, end, head) {
                last = union;
                end = next;
            }
            return Some((head_end, last, end));
        }
    }
    None
}

/// `(\sunion(?:\sall)?)\s\1` at `at`: the union keyword and the end of the match.
fn union_then<'q>(q: &'q [u8], at: usize, head: &[u8]) -> Option<(&'q [u8], usize)> {
    if !q.get(at).copied().is_some_and(is_space) || !q[at + 1..].starts_with(b"union") {
        return None;
    }
    let plain = at + 6;
    let with_all = (q.get(plain).copied().is_some_and(is_space)
        && q[plain + 1..].starts_with(b"all"))
    .then_some(plain + 4);
    for keyword_end in with_all.into_iter().chain([plain]) {
        if q.get(keyword_end).copied().is_some_and(is_space)
            && q[keyword_end + 1..].starts_with(head)
        {
            return Some((&q[at..keyword_end], keyword_end + 1 + head.len()));
        }
    }
    None
}

/// `s/\blimit \?(?:, ?\?| offset \?)?/limit ?/`: the first LIMIT keeps one `?`.
fn abstract_limit(q: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(at) = LIMIT.find_iter(q).find(|at| word_start(q, *at)) else {
        return false;
    };
    let mut end = at + 7;
    let rest = &q[end..];
    if rest.starts_with(b", ?") {
        end += 3;
    } else if rest.starts_with(b",?") {
        end += 2;
    } else if rest.starts_with(b" offset ?") {
        end += 9;
    }
    out.extend_from_slice(&q[..at]);
    out.extend_from_slice(b"limit ?");
    out.extend_from_slice(&q[end..]);
    true
}

/// `if (m/\bORDER BY /gi) { s/\G(.+?)\s+ASC/$1/gi }`: after the first ORDER BY, every
/// ` asc` goes, as long as each follows the previous one (`desc` stays). `plain`
/// says the text is lower case with single spaces only and no other whitespace
/// (`\s+` is then one space).
fn drop_order_by_asc(q: &[u8], out: &mut Vec<u8>, plain: bool) -> bool {
    // `y` is rare in SQL: find `order by ` from the `y` of each `by `.
    let order_by = memchr::memchr_iter(b'y', q)
        .filter(|&y| y >= 7 && &q[y - 7..y] == b"order b" && q.get(y + 1) == Some(&b' '))
        .map(|y| y - 7)
        .find(|&at| word_start(q, at));
    let Some(order_by) = order_by else {
        return false;
    };
    let mut cur = order_by + 9;
    out.extend_from_slice(&q[..cur]);
    'matches: while cur < q.len() {
        if plain {
            // `.+?` takes at least one byte.
            if let Some(at) = SPACE_ASC.find(&q[(cur + 1).min(q.len())..]) {
                let p = cur + 1 + at;
                out.extend_from_slice(&q[cur..p]);
                cur = p + 4;
                continue 'matches;
            }
            break;
        }
        for p in cur + 1..q.len() {
            if !is_space(q[p]) {
                continue;
            }
            let run = q[p..].iter().take_while(|b| is_space(**b)).count();
            if starts_with_ci(&q[p + run..], b"asc") {
                out.extend_from_slice(&q[cur..p]);
                cur = p + run + 3;
                continue 'matches;
            }
        }
        break;
    }
    out.extend_from_slice(&q[cur..]);
    true
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn examples_from_the_corpus_readme() {
        assert_eq!(
            fingerprint(
                "Select * From Users Where Id In (1,2) Order By Name Asc Limit 5 Offset 10"
            ),
            "select * from users where id in(?+) order by name limit ?"
        );
        assert_eq!(
            fingerprint(
                "INSERT INTO counters (id, hits) VALUES (1, 1), (2, 1) ON DUPLICATE KEY UPDATE hits = VALUES(hits)"
            ),
            "insert into counters (id, hits) values(?+)"
        );
        assert_eq!(
            fingerprint("CALL process_order(1001, 'express')"),
            "call process_order"
        );
    }

    #[test]
    fn improves_on_pt_fingerprint_where_it_is_plainly_wrong() {
        assert_eq!(fingerprint("SELECT 'O''Brien'"), "select ?");
        assert_eq!(
            fingerprint("UPDATE a SET balance = balance - 10"),
            "update a set balance = balance - ?"
        );
        assert_eq!(
            fingerprint("SELECT 1E10, 0xFF, X'AB', B'01'"),
            "select ?, ?, ?, ?"
        );
        assert_eq!(
            fingerprint("SELECT t1.id FROM tab1"),
            "select t?.id from tab?"
        );
        assert_eq!(fingerprint("SET NAMES utf8mb4"), "set names utf?mb?");
    }

    #[test]
    fn dashes_joined_by_removing_a_comment_start_a_line_comment() {
        // As pt-fingerprint: the block comment goes first, then `--` runs to the end
        // (pt-fingerprint 3.2.1 gives `select ? `, its trailing space included).
        assert_eq!(fingerprint("SELECT 1 -/*x*/- rest"), "select ? ");
        assert_eq!(fingerprint("-/*SELECT*/-"), "");
    }

    #[test]
    fn keywords_joined_by_removing_a_comment_are_still_found() {
        // The scan sees no `null`, `limit` or `order by`; the comments' removal makes them.
        assert_eq!(
            fingerprint(
                "SELECT a FROM t WHERE b IS NU/* x */LL ORD/* y */ER BY a ASC LIM/* z */IT 5"
            ),
            "select a from t where b is ? order by a limit ?"
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        for sql in [
            "",
            "'",
            "\"",
            "/*",
            "/**/",
            "--",
            "#",
            "call",
            "call (",
            "call ",
            "CALL \t",
            "call x(",
            "insert into",
            "insert into x values (",
            "select union",
            "select  union select ",
            "order by ",
            "limit ?",
            "\\",
            "x'",
            "\u{0}\u{7f}é'",
        ] {
            let _ = fingerprint(sql);
        }
    }
}
