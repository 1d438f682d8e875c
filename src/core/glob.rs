//! Shell-style globs for names: `*` is any run of characters, `?` one character,
//! `\` escapes the next one. Everything else matches itself.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    kind: Kind,
    case_insensitive: bool,
}

#[derive(Clone, PartialEq, Eq)]
enum Kind {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    Pattern(Vec<Token>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
enum Token {
    Literal(char),
    One,
    Many,
}

impl Glob {
    /// A case-sensitive glob (user and database names).
    pub fn new(pattern: &str) -> Glob {
        Glob::build(pattern, false)
    }

    /// A glob that ignores ASCII case (host names).
    pub fn new_case_insensitive(pattern: &str) -> Glob {
        Glob::build(pattern, true)
    }

    fn build(pattern: &str, case_insensitive: bool) -> Glob {
        let folded;
        let text = if case_insensitive {
            folded = pattern.to_ascii_lowercase();
            folded.as_str()
        } else {
            pattern
        };
        let mut tokens = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '*' if tokens.last() == Some(&Token::Many) => continue,
                '*' => Token::Many,
                '?' => Token::One,
                '\\' => Token::Literal(chars.next().unwrap_or('\\')),
                c => Token::Literal(c),
            });
        }
        let literal = |ts: &[Token]| -> Option<String> {
            ts.iter()
                .map(|t| match t {
                    Token::Literal(c) => Some(*c),
                    _ => None,
                })
                .collect()
        };
        let n = tokens.len();
        let kind = if tokens == [Token::Many] {
            Kind::Any
        } else if let Some(exact) = literal(&tokens) {
            Kind::Exact(exact)
        } else if tokens[n - 1] == Token::Many
            && let Some(prefix) = literal(&tokens[..n - 1])
        {
            Kind::Prefix(prefix)
        } else if tokens[0] == Token::Many
            && let Some(suffix) = literal(&tokens[1..])
        {
            Kind::Suffix(suffix)
        } else {
            Kind::Pattern(tokens)
        };
        Glob {
            source: pattern.to_owned(),
            kind,
            case_insensitive,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has no wildcard (it names exactly one value).
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Exact(_))
    }

    /// The one value a wildcard-free pattern names (escapes resolved).
    pub fn literal(&self) -> Option<&str> {
        match &self.kind {
            Kind::Exact(s) => Some(s),
            _ => None,
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        if self.case_insensitive && !matches!(self.kind, Kind::Any) {
            return self.matches_folded(&text.to_ascii_lowercase());
        }
        self.matches_folded(text)
    }

    fn matches_folded(&self, text: &str) -> bool {
        match &self.kind {
            Kind::Any => true,
            Kind::Exact(s) => text == s,
            Kind::Prefix(p) => text.starts_with(p.as_str()),
            Kind::Suffix(s) => text.ends_with(s.as_str()),
            Kind::Pattern(tokens) => {
                let text: Vec<char> = text.chars().collect();
                matches_tokens(tokens, &text)
            }
        }
    }
}

/// Iterative wildcard matching with single-star backtracking: linear in practice,
/// O(n·m) at worst, never exponential.
fn matches_tokens(tokens: &[Token], text: &[char]) -> bool {
    let (mut t, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < text.len() {
        match tokens.get(t) {
            Some(Token::Many) => {
                star = Some((t, s));
                t += 1;
            }
            Some(Token::One) => {
                t += 1;
                s += 1;
            }
            Some(Token::Literal(c)) if *c == text[s] => {
                t += 1;
                s += 1;
            }
            _ => match star {
                Some((st, ss)) => {
                    t = st + 1;
                    s = ss + 1;
                    star = Some((st, ss + 1));
                }
                None => return false,
            },
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Many)
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.source)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn globs_match_like_a_shell() {
        let cases = [
            ("app", "app", true),
            ("app", "App", false),
            ("app", "app2", false),
            ("report_*", "report_daily", true),
            ("report_*", "report_", true),
            ("report_*", "reporter", false),
            ("*_ro", "orders_ro", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*", "", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("10.0.*.5", "10.0.12.5", true),
            ("**x", "x", true),
            ("é*", "éa", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                Glob::new(pattern).matches(text),
                expected,
                "{pattern} vs {text}"
            );
        }
    }

    #[test]
    fn host_globs_ignore_case() {
        assert!(Glob::new_case_insensitive("Web-*.Example.com").matches("web-1.example.COM"));
        assert!(Glob::new_case_insensitive("LOCALHOST").matches("localhost"));
    }
}
