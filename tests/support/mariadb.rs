//! Throwaway MariaDB servers for the tests.
//!
//! `MariaDb::shared()` is the server of the whole run: the one the test script
//! started (`SESSION_REAPER_TEST_MARIADB=127.0.0.1:PORT`), or else one this test
//! process starts and a watchdog stops when the process exits. `MariaDb::dedicated()`
//! is a server of a test's own, for tests that match every session or restart it.
//! Every test makes its own users, so tests run in parallel on the shared server.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

pub struct MariaDb {
    pub port: u16,
    /// Set when this process started the server (and must stop it).
    dir: Option<PathBuf>,
    child: Mutex<Option<Child>>,
}

#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub password: String,
}

static SHARED: OnceLock<MariaDb> = OnceLock::new();
static SEQ: AtomicU32 = AtomicU32::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// What every start of a dedicated server passes: its files in `dir`, on `port`.
/// The server's temp dir is its own: a mariadbd deletes every `#sql*` file in its
/// tmpdir as it starts, so with /tmp shared, starting a server failed the queries
/// running on the others (a processlist read makes such a file).
fn server_args(dir: &Path, port: u16) -> Vec<String> {
    vec![
        "--no-defaults".to_owned(),
        "--user=root".to_owned(),
        format!("--datadir={}", dir.join("data").display()),
        format!("--tmpdir={}", dir.join("tmp").display()),
        format!("--socket={}", dir.join("sock").display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".to_owned(),
        format!("--pid-file={}", dir.join("pid").display()),
        format!("--log-error={}", dir.join("error.log").display()),
        "--max-connections=6000".to_owned(),
        "--skip-name-resolve".to_owned(),
        "--innodb-buffer-pool-size=64M".to_owned(),
    ]
}

fn server_binary() -> &'static str {
    for p in [
        "/usr/sbin/mariadbd",
        "/usr/bin/mariadbd",
        "/usr/sbin/mysqld",
    ] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!(
        "mariadbd is not installed: run the test script (scripts/test), which installs mariadb-server"
    )
}

/// Extra server options for a dedicated server.
#[derive(Default, Clone)]
pub struct Options {
    pub args: Vec<String>,
}

impl MariaDb {
    /// A handle on a server someone else runs (not stopped when dropped).
    pub fn on_port(port: u16) -> MariaDb {
        MariaDb {
            port,
            dir: None,
            child: Mutex::new(None),
        }
    }

    pub fn shared() -> &'static MariaDb {
        SHARED.get_or_init(|| {
            if let Ok(addr) = std::env::var("SESSION_REAPER_TEST_MARIADB") {
                let port = addr
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("SESSION_REAPER_TEST_MARIADB is host:port");
                return MariaDb {
                    port,
                    dir: None,
                    child: Mutex::new(None),
                };
            }
            MariaDb::start(&Options::default(), true)
        })
    }

    pub fn dedicated() -> MariaDb {
        MariaDb::start(&Options::default(), false)
    }

    pub fn dedicated_with(options: &Options) -> MariaDb {
        MariaDb::start(options, false)
    }

    fn start(options: &Options, for_process: bool) -> MariaDb {
        let dir = tempfile::Builder::new()
            .prefix("session-reaper-mariadb-")
            .tempdir()
            .expect("a temp dir")
            .keep();
        let data = dir.join("data");
        std::fs::create_dir_all(dir.join("tmp")).expect("the server's temp dir");
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--datadir={}", data.display()),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .output()
            .expect("mariadb-install-db runs (is mariadb-server installed?)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for attempt in 0..5 {
            let port = free_port();
            let mut args = server_args(&dir, port);
            args.extend([
                "--event-scheduler=ON".to_owned(),
                format!("--log-bin={}", dir.join("binlog").display()),
                "--server-id=1".to_owned(),
                "--innodb-log-file-size=16M".to_owned(),
                "--thread-cache-size=200".to_owned(),
            ]);
            args.extend(options.args.iter().cloned());
            let child = Command::new(server_binary())
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("mariadbd starts");
            // The server must not outlive this test process, whatever happens to it.
            // Only the test process's end counts: a server stopped and restarted by
            // a test (a new pid, in the pid file) keeps its data directory.
            let parent = std::process::id();
            let pidfile = dir.join("pid");
            let _ = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "trap '' HUP INT; while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
                     pid=$(cat '{pidfile}' 2>/dev/null); \
                     if [ -n \"$pid\" ]; then kill -TERM $pid 2>/dev/null; \
                       for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $pid 2>/dev/null || break; sleep 0.5; done; \
                       kill -KILL $pid 2>/dev/null; fi; rm -rf '{dir}'",
                    pidfile = pidfile.display(),
                    dir = dir.display()
                ))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
            let server = MariaDb {
                port,
                dir: Some(dir.clone()),
                child: Mutex::new(Some(child)),
            };
            if server.wait_ready(Duration::from_secs(30)) {
                let _ = for_process;
                return server;
            }
            server.stop();
            eprintln!("mariadbd on port {port} did not come up (attempt {attempt}); retrying");
        }
        panic!(
            "could not start mariadbd; see {}",
            dir.join("error.log").display()
        );
    }

    fn wait_ready(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            let ok = Command::new("mariadb")
                .args([
                    "-h127.0.0.1",
                    &format!("-P{}", self.port),
                    "-uroot",
                    "-e",
                    "SELECT 1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The server's process id, when this process started it.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().ok()?.as_ref().map(Child::id)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGTERM, then waits for it to exit). Dedicated servers only.
    pub fn stop(&self) {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts a stopped dedicated server again on the same port and data.
    pub fn restart(&self) {
        self.stop();
        let dir = self.dir.clone().expect("a dedicated server");
        let child = Command::new(server_binary())
            .args(server_args(&dir, self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd restarts");
        *self.child.lock().unwrap() = Some(child);
        assert!(
            self.wait_ready(Duration::from_secs(30)),
            "mariadbd came back"
        );
    }

    pub async fn connect(&self, user: &str, password: &str) -> mysql_async::Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false);
        Conn::new(opts).await
    }

    pub async fn admin(&self) -> Conn {
        self.connect("root", "").await.expect("root connects")
    }

    /// A new user `prefix_<unique>` with `grants` (e.g. `PROCESS, CONNECTION ADMIN ON *.*`).
    pub async fn create_user(&self, prefix: &str, grants: Option<&str>) -> User {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id() % 100_000);
        let password = format!("pw-{n}-{}", rand_suffix());
        let mut admin = self.admin().await;
        admin
            .query_drop(format!(
                "CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"
            ))
            .await
            .expect("create user");
        if let Some(g) = grants {
            admin
                .query_drop(format!("GRANT {g} TO '{name}'@'%'"))
                .await
                .expect("grant");
        }
        let _ = admin.disconnect().await;
        User { name, password }
    }

    /// A user with a fixed name (such as a cloud's O&M account), created if missing.
    pub async fn named_user(&self, name: &str) -> User {
        let password = "fixed-pw".to_owned();
        let mut admin = self.admin().await;
        admin
            .query_drop(format!(
                "CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY '{password}'"
            ))
            .await
            .expect("create user");
        let _ = admin.disconnect().await;
        User {
            name: name.to_owned(),
            password,
        }
    }

    /// A user that may read the process list and kill any session: what the
    /// `mysql` provider needs.
    pub async fn reaper_user(&self) -> User {
        self.create_user("reaper", Some("PROCESS, CONNECTION ADMIN ON *.*"))
            .await
    }

    /// A database of the test's own with a table `t (id INT PRIMARY KEY, v INT)`,
    /// usable by `users`.
    pub async fn create_db(&self, prefix: &str, users: &[&User]) -> String {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let db = format!("{prefix}_{}_{n}", std::process::id() % 100_000);
        let mut admin = self.admin().await;
        admin
            .query_drop(format!("CREATE DATABASE `{db}`"))
            .await
            .expect("create db");
        admin
            .query_drop(format!(
                "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB"
            ))
            .await
            .expect("create table");
        admin
            .query_drop(format!(
                "INSERT INTO `{db}`.t VALUES (1, 1), (2, 2), (3, 3)"
            ))
            .await
            .expect("rows");
        for u in users {
            admin
                .query_drop(format!("GRANT ALL ON `{db}`.* TO '{}'@'%'", u.name))
                .await
                .expect("grant db");
        }
        let _ = admin.disconnect().await;
        db
    }

    /// `n` idle connections of `user`, opened concurrently.
    pub async fn open_idle(&self, user: &User, n: usize) -> Vec<Conn> {
        let mut out = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for _ in 0..n {
            pending.push(self.connect(&user.name, &user.password));
            if pending.len() == 64 {
                for c in futures::future::join_all(pending.drain(..)).await {
                    out.push(c.expect("test user connects"));
                }
            }
        }
        for c in futures::future::join_all(pending).await {
            out.push(c.expect("test user connects"));
        }
        out
    }

    /// The connection ids of `user`'s sessions.
    pub async fn ids_of(&self, user: &str) -> Vec<u64> {
        let mut admin = self.admin().await;
        let ids: Vec<u64> = admin
            .exec(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = ? ORDER BY ID",
                (user,),
            )
            .await
            .expect("processlist");
        let _ = admin.disconnect().await;
        ids
    }

    /// Every session: id, user, command.
    pub async fn processlist(&self) -> Vec<(u64, String, String)> {
        let mut admin = self.admin().await;
        let rows: Vec<(u64, String, String)> = admin
            .query("SELECT ID, USER, COMMAND FROM information_schema.PROCESSLIST ORDER BY ID")
            .await
            .expect("processlist");
        let _ = admin.disconnect().await;
        rows
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir
            && SHARED.get().map(|s| s.port) != Some(self.port)
        {
            self.stop();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{t:x}")
}

/// Polls `check` every 20 ms until it returns true or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
