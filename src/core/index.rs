//! A compact view of a snapshot for `plan`: each session's user, command, host, db
//! and state become small integers (one pass over the snapshot's strings), and the
//! sessions are grouped by user. A policy's conditions on those fields are then
//! worked out once per distinct value, not once per session, and a policy that
//! names users only visits those users' sessions. On 100,000 sessions × 50 policies
//! this is what keeps `plan` from reading millions of scattered strings.
//!
//! Whether a session matches is exactly `Match::first_failure(..).is_none()`; the
//! property tests hold the two to that.

use rustc_hash::FxHashMap;

use super::policy::Match;
use super::session::{Session, Snapshot};
use crate::fingerprint::Fingerprinter;

/// Distinct values of one field; id 0 is "absent".
///
/// An open-addressing table keyed by a string's length and its first and last
/// eight bytes: for strings of up to 16 bytes (users, commands, hosts, most
/// states) those say everything, so a lookup is a few word compares with no hash
/// over the bytes nor a call to `memcmp`; longer ones compare their middle too.
/// Against a general hash map (`FxHashMap<&str, u32>`), `plan` over 100,000
/// sessions × 50 policies runs 15.1M fewer instructions (callgrind: 95.2M ->
/// 80.1M); where reading the strings from memory is the bottleneck, the time is
/// the same.
pub(crate) struct Values<'a> {
    slots: Vec<Slot>,
    values: Vec<Option<&'a str>>,
}

/// One slot of `Values`: `id` 0 when empty.
#[derive(Clone, Copy, Default)]
struct Slot {
    first: u64,
    last: u64,
    len: u32,
    id: u32,
}

/// A string's first and last eight bytes as words. Together with its length they
/// are the whole string when it has up to 16 bytes (shorter ones: the first and
/// last four, or the first, middle and last byte).
#[inline]
fn ends(b: &[u8]) -> (u64, u64) {
    let n = b.len();
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
    let half = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
    if n >= 8 {
        (word(0), word(n - 8))
    } else if n >= 4 {
        (u64::from(half(0)), u64::from(half(n - 4)))
    } else if n > 0 {
        let (a, m, z) = (b[0], b[n / 2], b[n - 1]);
        (u64::from(a) | u64::from(m) << 8 | u64::from(z) << 16, 0)
    } else {
        (0, 0)
    }
}

impl<'a> Values<'a> {
    fn new() -> Self {
        Values {
            slots: vec![Slot::default(); 16],
            values: vec![None],
        }
    }

    // Inlined into the index's one loop: as a call, saving and restoring
    // registers was half of its instructions.
    #[inline(always)]
    fn id(&mut self, value: Option<&'a str>) -> u32 {
        let Some(v) = value else { return 0 };
        let b = v.as_bytes();
        let (first, last) = ends(b);
        let len = b.len() as u32;
        let mask = self.slots.len() - 1;
        let mut at = slot_of(first, last, len) & mask;
        loop {
            let slot = self.slots[at];
            if slot.id == 0 {
                return self.insert(
                    at,
                    v,
                    Slot {
                        first,
                        last,
                        len,
                        id: 0,
                    },
                );
            }
            if slot.first == first
                && slot.last == last
                && slot.len == len
                && (b.len() <= 16
                    || self.values[slot.id as usize]
                        .is_some_and(|known| known.as_bytes()[8..b.len() - 8] == b[8..b.len() - 8]))
            {
                return slot.id;
            }
            at = (at + 1) & mask;
        }
    }

    #[cold]
    fn insert(&mut self, at: usize, v: &'a str, mut slot: Slot) -> u32 {
        slot.id = self.values.len() as u32;
        self.values.push(Some(v));
        self.slots[at] = slot;
        // At most half full, so that a probe ends soon.
        if self.values.len() * 2 > self.slots.len() {
            let grown = vec![Slot::default(); self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            let mask = self.slots.len() - 1;
            for s in old.into_iter().filter(|s| s.id != 0) {
                let mut at = slot_of(s.first, s.last, s.len) & mask;
                while self.slots[at].id != 0 {
                    at = (at + 1) & mask;
                }
                self.slots[at] = s;
            }
        }
        slot.id
    }

    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&'a str> {
        self.values[id as usize]
    }
}

#[inline]
fn slot_of(first: u64, last: u64, len: u32) -> usize {
    let h = (first ^ last.rotate_left(29) ^ u64::from(len)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 32) as usize
}

/// One session's fields, as ids: those a policy reads beyond its user and
/// command, which the row's group (`Index::rows_of`) already says.
#[derive(Clone, Copy)]
pub(crate) struct Row {
    /// The session's index in the snapshot.
    pub session: u32,
    pub host: u32,
    pub db: u32,
    pub state: u32,
    pub time_ms: u64,
    /// `u64::MAX` when not in a transaction.
    pub trx_age_ms: u64,
}

/// Which optional fields some policy's conditions read.
#[derive(Clone, Copy, Default)]
pub(crate) struct Needs {
    pub host: bool,
    pub db: bool,
    /// The statements (`sql`, `sql_template`).
    pub sql: bool,
}

impl Needs {
    pub(crate) fn of<'m>(matchers: impl IntoIterator<Item = &'m Match>) -> Needs {
        matchers.into_iter().fold(Needs::default(), |n, m| Needs {
            host: n.host || !m.host.is_empty(),
            db: n.db || !m.db.is_empty(),
            sql: n.sql || m.needs_sql(),
        })
    }
}

pub(crate) struct Index<'a> {
    pub users: Values<'a>,
    pub commands: Values<'a>,
    pub hosts: Values<'a>,
    pub dbs: Values<'a>,
    pub states: Values<'a>,
    /// The rows grouped by user id, then by command id, in snapshot order within
    /// a group (`rows[start[u * C + c]..start[u * C + c + 1]]`, C commands): a
    /// policy reads only the runs of the users and commands it names.
    pub rows: Vec<Row>,
    start: Vec<u32>,
    /// Each session's (user, command, state) ids, in snapshot order.
    pub fields: Vec<[u32; 3]>,
    /// Each session's id and node id, in snapshot order.
    pub ids: Vec<(u64, u32)>,
    /// Each session's statement, in snapshot order, when a policy reads them:
    /// read here in one pass, not from each session as a policy visits it.
    pub sql: Vec<Option<&'a str>>,
}

impl<'a> Index<'a> {
    pub(crate) fn new(snapshot: &'a Snapshot, needs: Needs) -> Index<'a> {
        let mut users = Values::new();
        let mut commands = Values::new();
        let mut hosts = Values::new();
        let mut dbs = Values::new();
        let mut states = Values::new();
        let mut nodes = Values::new();
        let mut ids = Vec::with_capacity(snapshot.sessions.len());
        let mut sql = Vec::with_capacity(if needs.sql {
            snapshot.sessions.len()
        } else {
            0
        });
        // One plain loop: as an iterator chain feeding `collect`, each row came
        // back from a call through memory.
        let mut unsorted = Vec::with_capacity(snapshot.sessions.len());
        let mut fields = Vec::with_capacity(snapshot.sessions.len());
        for (i, s) in snapshot.sessions.iter().enumerate() {
            ids.push((s.id, nodes.id(s.node.as_deref())));
            if needs.sql {
                sql.push(s.sql.as_deref());
            }
            let user = users.id(s.user.as_deref());
            let command = commands.id(Some(&s.command));
            let row = Row {
                session: i as u32,
                host: if needs.host {
                    hosts.id(s.host.as_deref())
                } else {
                    0
                },
                db: if needs.db { dbs.id(s.db.as_deref()) } else { 0 },
                state: states.id(s.state.as_deref()),
                time_ms: s.time_ms,
                trx_age_ms: s.trx.as_ref().map_or(u64::MAX, |t| t.age_ms),
            };
            fields.push([user, command, row.state]);
            unsorted.push(row);
        }
        // A counting sort by (user, command): stable, so each group's sessions
        // stay ascending. It counts the groups in the 12-byte `fields`, then
        // writes each row to its group's next place, reading `unsorted` in order.
        // (Reading rows in group order instead, through a sorted list of their
        // indexes, was a read from a random place per row: 12 % of `plan` 100k x 1
        // in `perf`.)
        let group =
            |&[user, command, _]: &[u32; 3]| user as usize * commands.len() + command as usize;
        let mut start = vec![0u32; users.len() * commands.len() + 1];
        for f in &fields {
            start[group(f) + 1] += 1;
        }
        for g in 1..start.len() {
            start[g] += start[g - 1];
        }
        let mut next = start.clone();
        let mut rows: Vec<Row> = Vec::with_capacity(fields.len());
        let places = &mut rows.spare_capacity_mut()[..fields.len()];
        for (f, row) in fields.iter().zip(&unsorted) {
            let slot = &mut next[group(f)];
            places[*slot as usize].write(*row);
            *slot += 1;
        }
        // Each group's places were filled up to the next group's start.
        debug_assert_eq!(next[..next.len() - 1], start[1..]);
        // SAFETY: the places written are `start[g]..start[g + 1]` for each group
        // g, as many as `fields` has rows of g (counted above from these same
        // `fields`): together every place in `0..fields.len()`, each once.
        unsafe { rows.set_len(fields.len()) };
        Index {
            users,
            commands,
            hosts,
            dbs,
            states,
            rows,
            start,
            fields,
            ids,
            sql,
        }
    }

    /// The sessions whose id appears more than once on one node, ascending.
    pub(crate) fn duplicate_ids(&self) -> Vec<usize> {
        let n = self.ids.len();
        let (min, max) = self
            .ids
            .iter()
            .fold((u64::MAX, 0), |(lo, hi), &(id, _)| (lo.min(id), hi.max(id)));
        let single_node = self.ids.iter().all(|&(_, node)| node == self.ids[0].1);
        let mut dups = Vec::new();
        if n > 0 && single_node && max - min <= 8 * n as u64 + 1024 {
            // Ids are dense (as servers hand them out): one slot per possible id.
            let mut first = vec![u32::MAX; (max - min + 1) as usize];
            for (i, &(id, _)) in self.ids.iter().enumerate() {
                let slot = &mut first[(id - min) as usize];
                if *slot == u32::MAX {
                    *slot = i as u32;
                } else {
                    dups.push(*slot as usize);
                    dups.push(i);
                }
            }
        } else {
            let mut first: FxHashMap<(u64, u32), usize> =
                FxHashMap::with_capacity_and_hasher(n, Default::default());
            for (i, &key) in self.ids.iter().enumerate() {
                if let Some(&f) = first.get(&key) {
                    dups.push(f);
                    dups.push(i);
                } else {
                    first.insert(key, i);
                }
            }
        }
        dups.sort_unstable();
        dups.dedup();
        dups
    }

    /// The rows of one user's sessions.
    /// The rows of one user running one command.
    pub(crate) fn rows_of(&self, user: u32, command: u32) -> &[Row] {
        let g = user as usize * self.commands.len() + command as usize;
        &self.rows[self.start[g] as usize..self.start[g + 1] as usize]
    }
}

/// A per-value answer worked out on first use: 0 unknown, 1 holds, 2 fails.
struct Memo(Vec<u8>);

impl Memo {
    fn new(len: usize) -> Memo {
        Memo(vec![0; len])
    }

    #[inline]
    fn holds(&mut self, id: u32, compute: impl FnOnce() -> bool) -> bool {
        let slot = &mut self.0[id as usize];
        if *slot == 0 {
            *slot = if compute() { 1 } else { 2 };
        }
        *slot == 1
    }
}

/// The smallest whole number of milliseconds that is not below `d`.
fn ceil_ms(d: std::time::Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000).min(u64::MAX as u128) as u64
}

/// One policy's `match:` against one index.
pub(crate) struct Matcher<'m> {
    m: &'m Match,
    templates: Vec<u32>,
    min_ms: Option<u64>,
    max_ms: Option<u64>,
    min_trx_ms: Option<u64>,
    users: Memo,
    commands: Memo,
    hosts: Memo,
    dbs: Memo,
    states: Memo,
}

impl<'m> Matcher<'m> {
    pub(crate) fn new(
        m: &'m Match,
        index: &Index<'_>,
        fingerprints: &mut FingerprintCache,
    ) -> Matcher<'m> {
        Matcher {
            m,
            templates: m.sql_template.iter().map(|t| fingerprints.id(t)).collect(),
            min_ms: m.min_time.map(ceil_ms),
            max_ms: m.max_time.map(ceil_ms),
            min_trx_ms: m.min_trx_time.map(ceil_ms),
            users: Memo::new(index.users.len()),
            commands: Memo::new(index.commands.len()),
            hosts: Memo::new(index.hosts.len()),
            dbs: Memo::new(index.dbs.len()),
            states: Memo::new(index.states.len()),
        }
    }

    /// Whether the user conditions (`user`, `not_user`) hold for a user id.
    pub(crate) fn user_holds(&mut self, index: &Index<'_>, user: u32) -> bool {
        let m = self.m;
        self.users.holds(user, || {
            let u = index.users.get(user);
            (m.user.is_empty() || u.is_some_and(|u| m.user.iter().any(|g| g.matches(u))))
                && (m.not_user.is_empty()
                    || u.is_some_and(|u| !m.not_user.iter().any(|g| g.matches(u))))
        })
    }

    /// Whether every condition holds for session `si`, the user conditions aside
    /// (the caller checked them per user).
    #[inline]
    /// Whether the `command` condition holds for a command id.
    pub(crate) fn command_holds(&mut self, index: &Index<'_>, command: u32) -> bool {
        let m = self.m;
        m.command.is_empty()
            || self.commands.holds(command, || {
                let name = index.commands.get(command).unwrap_or_default();
                m.command.iter().any(|c| c.eq_ignore_ascii_case(name))
            })
    }

    /// Whether every condition but `user`, `not_user`, `command` and
    /// `sql_template` holds (the caller checks the templates of many sessions at
    /// once with `FingerprintCache::retain_templates`).
    pub(crate) fn holds_beyond_user_and_command(
        &mut self,
        index: &Index<'_>,
        row: &Row,
        sessions: &[Session],
        transactions: bool,
    ) -> bool {
        let m = self.m;
        let si = row.session as usize;
        if self.min_ms.is_some_and(|min| row.time_ms < min)
            || self.max_ms.is_some_and(|max| row.time_ms >= max)
        {
            return false;
        }
        if !m.host.is_empty()
            && !self.hosts.holds(row.host, || {
                index
                    .hosts
                    .get(row.host)
                    .is_some_and(|h| m.host.iter().any(|g| g.matches(h)))
            })
        {
            return false;
        }
        if !m.db.is_empty()
            && !self.dbs.holds(row.db, || {
                index
                    .dbs
                    .get(row.db)
                    .is_some_and(|d| m.db.iter().any(|g| g.matches(d)))
            })
        {
            return false;
        }
        if !m.state.is_empty()
            && !self.states.holds(row.state, || {
                index
                    .states
                    .get(row.state)
                    .is_some_and(|s| m.state.iter().any(|x| x.eq_ignore_ascii_case(s)))
            })
        {
            return false;
        }
        if !m.template_id.is_empty()
            && !sessions[si]
                .template_id
                .as_deref()
                .is_some_and(|t| m.template_id.iter().any(|x| x == t))
        {
            return false;
        }
        if m.needs_transactions() {
            if !transactions {
                return false;
            }
            let in_trx = row.trx_age_ms != u64::MAX;
            if m.in_transaction.is_some_and(|wanted| in_trx != wanted) {
                return false;
            }
            if self
                .min_trx_ms
                .is_some_and(|min| !in_trx || row.trx_age_ms < min)
            {
                return false;
            }
        }
        if let Some(patterns) = &m.sql
            && !index.sql[si].is_some_and(|sql| patterns.set.is_match(sql))
        {
            return false;
        }
        true
    }

    /// The ids of the policy's `sql_template`s; empty when it names none.
    pub(crate) fn templates(&self) -> &[u32] {
        &self.templates
    }
}

/// Fingerprints computed at most once per session per plan, as ids: the policies'
/// templates get ids up front, so matching one is comparing integers, and a
/// session's fingerprint that is no template is never stored nor compared again.
pub(crate) struct FingerprintCache {
    fingerprinter: Fingerprinter,
    /// Per session: 0 when not computed yet, else the template's id + 1, or
    /// `NOT_A_TEMPLATE + 1`.
    by_session: Vec<u32>,
    templates: FxHashMap<String, u32>,
    /// `retain_templates`' list of sessions to fingerprint, kept for its memory.
    todo: Vec<u32>,
}

/// The id of every fingerprint that is none of the policies' templates.
const NOT_A_TEMPLATE: u32 = u32::MAX - 1;

impl FingerprintCache {
    /// Every template any policy of the plan names must be given here: a session
    /// is told "no template" once, for the whole plan.
    pub(crate) fn new<'t>(templates: impl IntoIterator<Item = &'t str>) -> Self {
        let mut ids = FxHashMap::default();
        for t in templates {
            let next = ids.len() as u32;
            ids.entry(t.to_owned()).or_insert(next);
        }
        FingerprintCache {
            fingerprinter: Fingerprinter::default(),
            by_session: Vec::new(),
            templates: ids,
            todo: Vec::new(),
        }
    }

    /// The id of a template given to `new`.
    pub(crate) fn id(&self, template: &str) -> u32 {
        // Not given to `new` would be a bug: such a template matches nothing.
        debug_assert!(self.templates.contains_key(template), "{template}");
        self.templates
            .get(template)
            .copied()
            .unwrap_or(NOT_A_TEMPLATE + 1)
    }

    /// Keeps the sessions (indexes, ascending) whose statement's fingerprint is
    /// one of `templates`; `sql` holds every session's statement. A session seen
    /// before is answered without reading its statement again.
    ///
    /// The statements no earlier policy fingerprinted are fingerprinted in
    /// snapshot order, each one's first bytes fetched from memory two statements
    /// ahead: most are read here for the first time in the plan, and `perf`
    /// showed half of the fingerprinting time waiting for them. `plan` 100k × 50
    /// (AMD EPYC, A/B of four rounds): 13.8–14.8 ms without the prefetch, 10.7–13.3
    /// ms with it. They are listed first so that every step of the prefetching
    /// loop is a fingerprint: with the sessions known already among them, "four
    /// ahead" was at times a few nanoseconds ahead, and the load of a statement's
    /// address in `sql` (1.6 MB at 100,000 sessions) was itself a miss.
    pub(crate) fn retain_templates(
        &mut self,
        sessions: &mut Vec<u32>,
        sql: &[Option<&str>],
        templates: &[u32],
    ) {
        if self.by_session.len() < sql.len() {
            self.by_session.resize(sql.len(), 0);
        }
        debug_assert!(sessions.is_sorted());
        // The sessions no earlier policy had fingerprinted, in snapshot order.
        let mut todo = std::mem::take(&mut self.todo);
        todo.clear();
        todo.extend(
            sessions
                .iter()
                .copied()
                .filter(|&si| self.by_session[si as usize] == 0),
        );
        // Each is fetched in two steps: its entry in `sql` four ahead, then, two
        // ahead, its statement's first bytes.
        const AHEAD: usize = 2;
        for &si in todo.iter().take(2 * AHEAD) {
            prefetch(sql.as_ptr().wrapping_add(si as usize));
        }
        for &si in todo.iter().take(AHEAD) {
            prefetch_statement(sql[si as usize]);
        }
        for (i, &si) in todo.iter().enumerate() {
            if let Some(&far) = todo.get(i + 2 * AHEAD) {
                prefetch(sql.as_ptr().wrapping_add(far as usize));
            }
            if let Some(&ahead) = todo.get(i + AHEAD) {
                prefetch_statement(sql[ahead as usize]);
            }
            let id = match sql[si as usize] {
                Some(statement) => {
                    let fp = self.fingerprinter.fingerprint(statement);
                    self.templates.get(fp).copied().unwrap_or(NOT_A_TEMPLATE)
                }
                None => NOT_A_TEMPLATE,
            };
            self.by_session[si as usize] = id + 1;
        }
        self.todo = todo;
        sessions.retain(|&si| templates.contains(&(self.by_session[si as usize] - 1)));
    }
}

/// Asks the CPU to fetch the start of a statement.
#[inline]
fn prefetch_statement(statement: Option<&str>) {
    if let Some(statement) = statement {
        prefetch(statement.as_ptr());
        if statement.len() > 64 {
            prefetch(statement.as_ptr().wrapping_add(64));
        }
    }
}

/// Asks the CPU to fetch the cache line holding `p` into its caches, without
/// waiting for it: for reads whose address is known well before they happen.
#[inline(always)]
pub(crate) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and
    // cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings that share their length and their first and last eight bytes (or
    /// four, or bytes) and differ elsewhere: each must get its own id, and
    /// looking one up again must give the same.
    #[test]
    fn values_tell_apart_strings_that_differ_in_any_one_byte() {
        let mut all = vec![String::new()];
        for len in 1..40 {
            let base: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            all.push(base.clone());
            for at in 0..len {
                let mut b = base.clone().into_bytes();
                b[at] = b'Z';
                all.push(String::from_utf8(b).unwrap());
            }
        }
        let mut values = Values::new();
        let ids: Vec<u32> = all.iter().map(|s| values.id(Some(s))).collect();
        // A second pass, once the table has grown, finds the same ids.
        let again: Vec<u32> = all.iter().map(|s| values.id(Some(s))).collect();
        assert_eq!(ids, again);
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "two strings got one id");
        for (s, &id) in all.iter().zip(&ids) {
            assert_ne!(id, 0);
            assert_eq!(values.get(id), Some(s.as_str()));
        }
        assert_eq!(values.id(None), 0);
        assert_eq!(values.len(), all.len() + 1);
    }
}
