//! Realistic, deterministic workloads for the benches: a busy primary's process list
//! (many application users, mostly idle connections, some long queries and open
//! transactions, replication and O&M threads), a set of operators' policies, and
//! a corpus of the SQL a process list shows.

#![allow(dead_code)]

use std::path::Path;

use chrono::{DateTime, TimeZone, Utc};
use session_reaper::config::{Config, config_from_str, policy_from_str};
use session_reaper::core::policy::Policy;
use session_reaper::core::session::{Session, Snapshot, Transaction};

/// xorshift64*: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap()
}

/// The statements of a typical OLTP application with reports and batch jobs, `?`
/// standing for literals filled in per statement.
const TEMPLATES: &[&str] = &[
    "SELECT id, status, total, created_at FROM orders WHERE customer_id = ? AND status IN (?, ?) ORDER BY created_at DESC LIMIT 20",
    "SELECT * FROM order_items WHERE order_id = ?",
    "UPDATE orders SET status = ?, updated_at = NOW() WHERE id = ?",
    "INSERT INTO order_events (order_id, kind, payload, created_at) VALUES (?, ?, ?, NOW())",
    "SELECT c.id, c.email, c.name FROM customers c WHERE c.email = ? LIMIT 1",
    "SELECT p.id, p.sku, p.price, s.qty FROM products p JOIN stock s ON s.product_id = p.id WHERE p.id IN (?, ?, ?, ?, ?)",
    "UPDATE stock SET qty = qty - ? WHERE product_id = ? AND qty >= ?",
    "DELETE FROM sessions WHERE expires_at < ?",
    "SELECT COUNT(*) FROM orders WHERE created_at >= ? AND created_at < ? AND status = ?",
    "SELECT o.id, o.total, c.email FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at BETWEEN ? AND ? AND o.total > ? ORDER BY o.total DESC",
    "select sum(total) as revenue, date(created_at) as day from orders where created_at >= ? group by date(created_at)",
    "INSERT INTO audit_log (actor, action, target, at) VALUES (?, ?, ?, ?), (?, ?, ?, ?)",
    "SELECT /* search */ id, title, price FROM products WHERE title LIKE ? AND category_id = ? AND price BETWEEN ? AND ? LIMIT 50",
    "UPDATE customers SET last_login = ?, login_count = login_count + 1 WHERE id = ?",
    "SELECT id FROM jobs WHERE state = ? AND run_at <= ? ORDER BY priority DESC, run_at LIMIT 100 FOR UPDATE SKIP LOCKED",
    "INSERT INTO metrics_hourly (metric, hour, value) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE value = value + VALUES(value)",
    "SELECT r.id, r.rating, r.body FROM reviews r WHERE r.product_id = ? AND r.visible = 1 ORDER BY r.created_at DESC LIMIT 10 OFFSET ?",
    "CALL refresh_customer_stats(?)",
    "SELECT @@session.transaction_isolation",
    "SET autocommit = 1",
];

const USERS: &[&str] = &[
    "app",
    "app_web",
    "app_api",
    "app_worker",
    "app_cart",
    "app_search",
    "app_admin",
    "report_daily",
    "report_finance",
    "report_adhoc",
    "etl",
    "batch_billing",
    "batch_mail",
    "monitor",
    "repl",
    "backup",
    "analytics",
    "svc_inventory",
    "svc_pricing",
    "svc_orders",
];

fn literal(rng: &mut Rng, out: &mut String) {
    use std::fmt::Write;
    match rng.below(6) {
        0 => {
            let _ = write!(
                out,
                "'{}'",
                ["paid", "shipped", "new", "cancelled"][rng.below(4) as usize]
            );
        }
        1 => {
            let _ = write!(
                out,
                "'2026-11-{:02} {:02}:{:02}:00'",
                1 + rng.below(28),
                rng.below(24),
                rng.below(60)
            );
        }
        2 => {
            let _ = write!(out, "'user{}@example.com'", rng.below(1_000_000));
        }
        3 => {
            let _ = write!(out, "{}.{:02}", rng.below(10_000), rng.below(100));
        }
        _ => {
            let _ = write!(out, "{}", rng.below(10_000_000));
        }
    }
}

/// One statement as a process list shows it.
pub fn statement(rng: &mut Rng) -> String {
    let template = rng.pick(TEMPLATES);
    let mut out = String::with_capacity(template.len() + 64);
    for (i, part) in template.split('?').enumerate() {
        if i > 0 {
            literal(rng, &mut out);
        }
        out.push_str(part);
    }
    out
}

/// `n` sessions of a busy primary.
pub fn snapshot(n: usize, seed: u64) -> Snapshot {
    let mut rng = Rng::new(seed);
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let id = 1000 + i as u64;
        let special = rng.below(1000);
        let (user, command, state) = match special {
            0 => (
                "system user",
                "Slave_SQL",
                Some("Slave has read all relay log; waiting for more updates"),
            ),
            1 => ("event_scheduler", "Daemon", Some("Waiting on empty queue")),
            2 => (
                "repl",
                "Binlog Dump GTID",
                Some("Master has sent all binlog to slave; waiting for more updates"),
            ),
            3 => ("rdsAdmin", "Sleep", None),
            _ => {
                let user = *rng.pick(USERS);
                match rng.below(100) {
                    0..=64 => (user, "Sleep", None),
                    65..=92 => (
                        user,
                        "Query",
                        Some(*rng.pick(&[
                            "Sending data",
                            "executing",
                            "Sorting result",
                            "Waiting for table metadata lock",
                            "updating",
                        ])),
                    ),
                    93..=96 => (user, "Execute", Some("executing")),
                    _ => (user, "Connect", Some("login")),
                }
            }
        };
        let busy = command == "Query" || command == "Execute";
        let time_ms = match rng.below(10) {
            0..=5 => rng.below(30_000),
            6..=8 => rng.below(600_000),
            _ => rng.below(7_200_000),
        };
        sessions.push(Session {
            id,
            user: Some(user.into()),
            host: Some(format!("10.{}.{}.{}", rng.below(4), rng.below(32), rng.below(250)).into()),
            port: Some(30000 + rng.below(30000) as u16),
            db: Some(
                rng.pick(&[
                    "shop",
                    "shop_archive",
                    "billing",
                    "reports",
                    "search",
                    "inventory",
                ])
                .to_owned()
                .into(),
            ),
            command: command.into(),
            time_ms,
            state: state.map(Into::into),
            sql: busy.then(|| statement(&mut rng)),
            query_id: Some(id * 7),
            trx: rng.chance(12).then(|| Transaction {
                id: format!("{}", 421_000_000 + rng.below(1_000_000)).into(),
                age_ms: time_ms + rng.below(60_000),
            }),
            template_id: None,
            node: None,
        });
    }
    Snapshot {
        format: Snapshot::FORMAT.to_owned(),
        target: "orders-primary".to_owned(),
        provider: "mysql".to_owned(),
        taken_at: now(),
        server: Default::default(),
        own_connection_ids: vec![999],
        transactions: true,
        partial: None,
        sessions: sessions.into(),
    }
}

fn config() -> Config {
    config_from_str(
        "targets:\n  - name: orders-primary\n    provider: mysql\n    url: mysql://reaper@127.0.0.1:3306\n",
        Path::new("/bench/config.yaml"),
    )
    .expect("the bench config is valid")
}

/// `count` policies of the kinds operators write: idle connections per user, long
/// statements per user and state, runaway SQL templates, transactions left open.
pub fn policies(count: usize) -> Vec<Policy> {
    let config = config();
    let mut rng = Rng::new(7);
    (0..count)
        .map(|i| {
            let user = rng.pick(USERS);
            let glob = if rng.chance(30) { format!("{}*", &user[..user.len().min(4)]) } else { user.to_string() };
            let body = match i % 5 {
                0 | 1 => format!(
                    "match:\n  user: [\"{glob}\"]\n  command: Sleep\n  min_time: {}s\n",
                    60 + rng.below(900)
                ),
                2 => format!(
                    "match:\n  user: [\"{glob}\"]\n  command: [Query, Execute]\n  state: [\"Sending data\", executing]\n  min_time: {}s\n",
                    30 + rng.below(600)
                ),
                3 => {
                    let mut r = Rng::new(i as u64);
                    format!(
                        "match:\n  user: [\"{glob}\"]\n  command: Query\n  min_time: {}s\n  sql_template: [{:?}]\n",
                        5 + rng.below(60),
                        statement(&mut r)
                    )
                }
                _ => format!(
                    "match:\n  user: [\"{glob}\"]\n  command: Sleep\n  in_transaction: true\n  min_trx_time: {}s\n",
                    60 + rng.below(600)
                ),
            };
            let text = format!(
                "name: p{i}\nschedule: every 5s\nmode: {}\nignored_users: [\"backup\"]\n{body}",
                if i % 2 == 0 { "enforce" } else { "dry-run" }
            );
            policy_from_str(&text, Path::new(&format!("/bench/policies/p{i}.yaml")), &config)
                .unwrap_or_else(|e| panic!("{text}\n{e}"))
        })
        .collect()
}

/// At least `bytes` of process-list SQL, one statement per entry.
pub fn sql_corpus(bytes: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut total = 0;
    let mut out = Vec::new();
    while total < bytes {
        let s = statement(&mut rng);
        total += s.len();
        out.push(s);
    }
    out
}
