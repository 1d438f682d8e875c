//! YAML read into a tree that remembers where every key and value was, and a
//! reader over it that collects every error (with file:line:col and a hint)
//! instead of stopping at the first.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::error::{ConfigError, nearest};

/// A YAML value with the positions of everything inside it.
#[derive(Debug)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                i128::try_from(v)
                    .map(Node::Int)
                    .map_err(|_| E::custom("number too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "nothing",
            Node::Bool(_) => "a boolean",
            Node::Int(_) => "a number",
            Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

/// One file being read: where errors go.
pub struct Doc {
    pub path: PathBuf,
    errors: RefCell<Vec<ConfigError>>,
}

/// A position in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    fn of<T>(s: &Spanned<T>) -> Pos {
        Pos {
            line: s.referenced.line(),
            column: s.referenced.column(),
        }
    }
}

impl Doc {
    pub fn new(path: &Path) -> Doc {
        Doc {
            path: path.to_owned(),
            errors: RefCell::new(Vec::new()),
        }
    }

    /// Parses `text`; a syntax error is recorded and gives `None`.
    pub fn parse(&self, text: &str) -> Option<Spanned<Node>> {
        match serde_saphyr::from_str::<Spanned<Node>>(text) {
            Ok(node) => Some(node),
            Err(e) => {
                let pos = e
                    .location()
                    .map(|l| Pos {
                        line: l.line(),
                        column: l.column(),
                    })
                    .unwrap_or(Pos { line: 1, column: 1 });
                let mut message = e.without_snippet().to_string();
                if let Some(at) = message.rfind(" at line ") {
                    message.truncate(at);
                }
                let hint = if message.starts_with("duplicate mapping key") {
                    message = message
                        .split(", set DuplicateKeyPolicy")
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    Some("each key may appear once".to_owned())
                } else {
                    Some("this is not valid YAML; check the indentation and quoting".to_owned())
                };
                self.error_at(pos, format!("YAML syntax: {message}"), hint);
                None
            }
        }
    }

    pub fn error_at(&self, pos: Pos, message: impl Into<String>, hint: Option<String>) {
        self.errors.borrow_mut().push(ConfigError {
            file: self.path.clone(),
            line: pos.line,
            column: pos.column,
            message: message.into(),
            hint,
        });
    }

    pub fn into_errors(self) -> Vec<ConfigError> {
        self.errors.into_inner()
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    pub fn value<'n>(&'n self, node: &'n Spanned<Node>, name: &str) -> Value<'n> {
        Value {
            node,
            doc: self,
            name: name.to_owned(),
        }
    }
}

/// A value and its key path (`targets[1].url`), for messages.
pub struct Value<'n> {
    node: &'n Spanned<Node>,
    doc: &'n Doc,
    pub name: String,
}

impl<'n> Value<'n> {
    pub fn pos(&self) -> Pos {
        Pos::of(self.node)
    }

    pub fn node(&self) -> &'n Node {
        &self.node.value
    }

    pub fn doc(&self) -> &'n Doc {
        self.doc
    }

    pub fn error(&self, message: impl Into<String>, hint: Option<String>) {
        self.doc.error_at(self.pos(), message, hint);
    }

    fn wrong_type(&self, expected: &str, hint: Option<String>) {
        self.error(
            format!(
                "`{}` must be {expected}, not {}",
                self.name,
                self.node.value.kind()
            ),
            hint,
        );
    }

    pub fn str(&self) -> Option<&'n str> {
        match &self.node.value {
            Node::Str(s) => Some(s),
            _ => {
                self.wrong_type("a string", None);
                None
            }
        }
    }

    /// A non-empty string.
    pub fn name(&self) -> Option<&'n str> {
        let s = self.str()?;
        if s.trim().is_empty() {
            self.error(format!("`{}` must not be empty", self.name), None);
            return None;
        }
        Some(s)
    }

    pub fn bool(&self) -> Option<bool> {
        match &self.node.value {
            Node::Bool(b) => Some(*b),
            _ => {
                self.wrong_type("true or false", None);
                None
            }
        }
    }

    pub fn u64(&self) -> Option<u64> {
        match &self.node.value {
            Node::Int(i) if *i >= 0 && *i <= u64::MAX as i128 => Some(*i as u64),
            Node::Int(_) => {
                self.error(format!("`{}` must be a whole number ≥ 0", self.name), None);
                None
            }
            _ => {
                self.wrong_type("a whole number", None);
                None
            }
        }
    }

    pub fn f64(&self) -> Option<f64> {
        match &self.node.value {
            Node::Int(i) => Some(*i as f64),
            Node::Float(f) if f.is_finite() => Some(*f),
            _ => {
                self.wrong_type("a number", None);
                None
            }
        }
    }

    /// A duration such as `250ms`, `30s`, `5m`, `1h30m`.
    pub fn duration(&self) -> Option<Duration> {
        match &self.node.value {
            Node::Str(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.error(
                        format!("`{}`: {e}", self.name),
                        Some(DURATION_HINT.to_owned()),
                    );
                    None
                }
            },
            Node::Int(i) => {
                self.error(
                    format!("`{}` needs a unit", self.name),
                    Some(format!(
                        "write `{i}s` for {i} seconds or `{i}ms` for milliseconds"
                    )),
                );
                None
            }
            _ => {
                self.wrong_type("a duration", Some(DURATION_HINT.to_owned()));
                None
            }
        }
    }

    /// A string or a list of strings (a single string is a list of one).
    pub fn strings(&self) -> Option<Vec<(String, Pos)>> {
        match &self.node.value {
            Node::Str(s) => Some(vec![(s.clone(), self.pos())]),
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match &item.value {
                        Node::Str(s) => out.push((s.clone(), Pos::of(item))),
                        Node::Int(n) => out.push((n.to_string(), Pos::of(item))),
                        other => {
                            self.doc.error_at(
                                Pos::of(item),
                                format!(
                                    "`{}[{i}]` must be a string, not {}",
                                    self.name,
                                    other.kind()
                                ),
                                None,
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.wrong_type("a string or a list of strings", None);
                None
            }
        }
    }

    /// The items of a list.
    pub fn list(&self) -> Option<Vec<Value<'n>>> {
        match &self.node.value {
            Node::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Value {
                        node: item,
                        doc: self.doc,
                        name: format!("{}[{i}]", self.name),
                    })
                    .collect(),
            ),
            _ => {
                self.wrong_type("a list", None);
                None
            }
        }
    }

    /// A mapping whose keys must be among `known`; unknown keys are reported with
    /// the nearest known spelling.
    pub fn map(&self, known: &[&str]) -> Option<Map<'n>> {
        let Node::Map(entries) = &self.node.value else {
            self.wrong_type("a mapping of keys to values", None);
            return None;
        };
        for (key, _) in entries {
            if !known.contains(&key.value.as_str()) {
                let prefix = if self.name.is_empty() {
                    String::new()
                } else {
                    format!("{}.", self.name)
                };
                let hint = match nearest(&key.value, known) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!("valid keys here: {}", known.join(", ")),
                };
                self.doc.error_at(
                    Pos::of(key),
                    format!("unknown key `{prefix}{}`", key.value),
                    Some(hint),
                );
            }
        }
        Some(Map {
            entries,
            doc: self.doc,
            name: self.name.clone(),
            pos: self.pos(),
        })
    }
}

/// A mapping being read.
pub struct Map<'n> {
    entries: &'n [(Spanned<String>, Spanned<Node>)],
    doc: &'n Doc,
    name: String,
    pos: Pos,
}

impl<'n> Map<'n> {
    pub fn pos(&self) -> Pos {
        self.pos
    }

    fn path(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// The value of `key`, if present and not null.
    pub fn get(&self, key: &str) -> Option<Value<'n>> {
        self.entries
            .iter()
            .find(|(k, v)| k.value == key && !matches!(v.value, Node::Null))
            .map(|(_, v)| Value {
                node: v,
                doc: self.doc,
                name: self.path(key),
            })
    }

    /// The value of `key`; its absence is an error.
    pub fn require(&self, key: &str) -> Option<Value<'n>> {
        let v = self.get(key);
        if v.is_none() {
            self.doc
                .error_at(self.pos, format!("missing `{}`", self.path(key)), None);
        }
        v
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The position of `key` itself (for errors about the key).
    pub fn key_pos(&self, key: &str) -> Pos {
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(k, _)| Pos::of(k))
            .unwrap_or(self.pos)
    }

    pub fn doc(&self) -> &'n Doc {
        self.doc
    }
}

/// Our unit for a word people write for it (`sec`, `minutes`, `hrs`, `ms`).
fn unit_for(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "ms" | "msec" | "msecs" | "millis" | "millisecond" | "milliseconds" => "ms",
        "s" | "sec" | "secs" | "second" | "seconds" => "s",
        "m" | "min" | "mins" | "minute" | "minutes" => "m",
        "h" | "hr" | "hrs" | "hour" | "hours" => "h",
        "d" | "day" | "days" => "d",
        _ => return None,
    })
}

pub const DURATION_HINT: &str = "durations are written like `250ms`, `30s`, `5m`, `1h` or `1h30m`";

/// Parses `250ms`, `30s`, `1.5s`, `5m`, `1h30m`, `2d`. Millisecond precision.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total_ms: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!("`{text}` is not a duration"));
        }
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ms: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                // `1.5 s`, `30 sec`: a word after a space.
                let word = tail.trim_start();
                let word = &word[..word
                    .find(|c: char| !c.is_ascii_alphabetic())
                    .unwrap_or(word.len())];
                return Err(match unit_for(word) {
                    _ if word.is_empty() => format!("`{text}` needs a unit"),
                    Some(unit) => format!("`{text}` is written `{num}{unit}`"),
                    None => format!("unknown unit `{word}` in `{text}`"),
                });
            }
            other => {
                return Err(match unit_for(other) {
                    Some(unit) => format!("`{text}`: `{other}` is written `{unit}`"),
                    None => format!("unknown unit `{other}` in `{text}`"),
                });
            }
        };
        let ms = match num.split_once('.') {
            None => num
                .parse::<u128>()
                .map_err(|_| format!("`{text}` is not a duration"))?
                .checked_mul(unit_ms)
                .ok_or_else(|| format!("`{text}` is too long"))?,
            Some((whole, frac)) => {
                if frac.is_empty() || frac.contains('.') || frac.len() > 3 {
                    return Err(format!("`{text}` is not a duration"));
                }
                let whole: u128 = if whole.is_empty() {
                    0
                } else {
                    whole
                        .parse()
                        .map_err(|_| format!("`{text}` is not a duration"))?
                };
                let scale = 10u128.pow(frac.len() as u32);
                let frac: u128 = frac
                    .parse()
                    .map_err(|_| format!("`{text}` is not a duration"))?;
                let numer = (whole * scale + frac) * unit_ms;
                if !numer.is_multiple_of(scale) {
                    return Err(format!("`{text}` is finer than a millisecond"));
                }
                numer / scale
            }
        };
        total_ms = total_ms
            .checked_add(ms)
            .ok_or_else(|| format!("`{text}` is too long"))?;
        rest = tail;
    }
    if total_ms > u64::MAX as u128 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(Duration::from_millis(total_ms as u64))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_to_the_millisecond() {
        let ok = [
            ("250ms", 250),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1.5s", 1_500),
            ("0.25s", 250),
            ("2d", 172_800_000),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "", "5", "s", "5 s", "1.5ms", "5x", "1..5s", "-1s", "0.0001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_unit_written_otherwise_is_named_in_ours() {
        let said = |text: &str| parse_duration(text).unwrap_err();
        assert_eq!(said("1.5 sec"), "`1.5 sec` is written `1.5s`");
        assert_eq!(said("5 s"), "`5 s` is written `5s`");
        assert_eq!(said("30sec"), "`30sec`: `sec` is written `s`");
        assert_eq!(said("2Minutes"), "`2Minutes`: `Minutes` is written `m`");
        assert_eq!(
            said("5 fortnights"),
            "unknown unit `fortnights` in `5 fortnights`"
        );
        assert_eq!(said("5x"), "unknown unit `x` in `5x`");
        assert_eq!(said("5"), "`5` needs a unit");
        assert_eq!(said("5 "), "`5 ` needs a unit");
    }
}
