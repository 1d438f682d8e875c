//! Shared test parts: throwaway MariaDB servers and config directories.

#![allow(dead_code)]

pub mod fakes;
pub mod mariadb;
pub mod stall;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use session_reaper::audit::{Audit, Record};

#[allow(unused_imports)]
pub use mariadb::{MariaDb, User, wait_until};

/// A config directory: `config.yaml`, `policies/`, `state/`, secrets.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("session-reaper-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("policies")).expect("policies dir");
        Setup { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Writes `config.yaml` with `state_dir: state`, `policies_dir: policies` and
    /// the given `targets:` block (and anything else) appended.
    pub fn config(&self, rest: &str) -> PathBuf {
        let text = format!("listen: 127.0.0.1:0\nstate_dir: state\npolicies_dir: policies\n{rest}");
        std::fs::write(self.config_path(), text).expect("write config");
        self.config_path()
    }

    pub fn policy(&self, file: &str, yaml: &str) {
        std::fs::write(self.dir.path().join("policies").join(file), yaml).expect("write policy");
    }

    pub fn secret(&self, name: &str, value: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, value).expect("write secret");
        p
    }

    /// A `mysql` target on `db` as `user`, its password in a secret file.
    pub fn mysql_target(&self, name: &str, db: &MariaDb, user: &User) -> String {
        let secret = self.secret(&format!("{name}.password"), &user.password);
        format!(
            "  - name: {name}\n    provider: mysql\n    url: mysql://{}@127.0.0.1:{}\n    password: {{file: {}}}\n",
            user.name,
            db.port,
            secret.display()
        )
    }

    /// Writes `config.yaml` with one target: `mysql_target(name, db, user)`.
    pub fn mysql_config(&self, name: &str, db: &MariaDb, user: &User) -> PathBuf {
        self.config(&format!("targets:\n{}", self.mysql_target(name, db, user)))
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("state").join("audit.jsonl")
    }

    pub fn audit(&self) -> Vec<Record> {
        Audit::read_all(&self.audit_path()).unwrap_or_default()
    }
}

/// A plain HTTP GET against the daemon: status code and body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("daemon listens");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("response");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The value of one sample in a /metrics page (`name{labels}` as printed).
pub fn metric(page: &str, name_and_labels: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `session-reaper run --config CONFIG --listen 127.0.0.1:0` (the daemon logs the
/// port it got), to add to and start with `spawn_daemon`.
pub fn run_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_session-reaper"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"]);
    cmd
}

/// Starts the daemon binary as `cmd` says (its stderr and stdout are taken): the
/// child, the address the daemon says it listens on, and its log, kept growing by
/// a thread.
pub fn spawn_daemon(
    mut cmd: Command,
) -> (
    Child,
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::BufRead;
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
            let mut l = sink.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the daemon listens")
        .parse()
        .unwrap();
    (child, addr, log)
}
