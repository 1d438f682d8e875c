//! The storm bench (issue 9): session-reaper side by side with the physical floor
//! and with pt-kill, on a throwaway MariaDB server of its own, fresh sessions for
//! every run.
//!
//! - `storm`: 3,000 idle sessions of `app` and 50 of an ignored user. The floor
//!   (one listing, then a tight `KILL CONNECTION` loop over k = 1, 2, 4, 8
//!   connections), pt-kill and session-reaper, each timed from its start until the
//!   last `app` session is gone; CPU time from the process's rusage; every ignored
//!   session must still answer a ping.
//! - `reaction`: sessions opened one by one cross a 2 s idle threshold; the time from
//!   crossing it to the kill, for session-reaper at `every 250ms` and `every 50ms`
//!   and for pt-kill at its 1 s minimum.
//! - `footprint`: the daemon's resident memory with 10 file targets of 1,000
//!   sessions and with 10,000 sessions on a real server; CPU at rest.
//! - `growth`: plan time, RSS and CPU per tick at 1k/10k/100k sessions and at
//!   1/10/100 targets, and plan time per session from 1k to 400k sessions.
//!
//!   cargo bench --bench storm                       # all four
//!   cargo bench --bench storm -- storm reaction     # some of them
//!   STORM_REPS=5 cargo bench --bench storm -- storm # more repetitions (default 3)
//!   cargo bench --bench storm -- probe              # re-check reads, listings, batched KILLs
//!
//! STORM_ONLY=session-reaper skips the floor and pt-kill, STORM_POOL=N sets the
//! target's pool_size, STORM_VERBOSE=1 prints each run's first kill and kill phase,
//! STORM_WRAP="perf record -g -o FILE --" runs the daemon under a profiler, STORM_BIN=PATH
//! runs another build of it (to compare two builds on the same server).
//!
//! Needs mariadbd (scripts/test installs it) and, for the comparison, pt-kill
//! (Debian's percona-toolkit); without pt-kill its rows are left out.

#[path = "../../tests/support/mariadb.rs"]
mod mariadb;
mod raw;
#[path = "../workload/mod.rs"]
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use mariadb::{MariaDb, Options};
use raw::Conn;
use session_reaper::core::plan::plan;
use session_reaper::core::protected::Protected;
use session_reaper::core::session::{Session, Snapshot};
use tokio::task::JoinHandle;

const APP: usize = 3_000;
const IGNORED: usize = 50;
const BIN: &str = env!("CARGO_BIN_EXE_session-reaper");

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The daemon's allocator settings, for the plan times of the growth table.
    session_reaper::allocator::tune();
    raise_fd_limit();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    let reps: usize = std::env::var("STORM_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let pt_kill = which("pt-kill");
    if pt_kill.is_none() {
        println!("pt-kill not found (apt-get install percona-toolkit): its rows are left out\n");
    }
    println!("machine: {} cores, {}\n", cores(), cpu_model());
    let needs_server = ["storm", "reaction", "footprint", "probe"]
        .iter()
        .any(|p| wants(p));
    let server = needs_server.then(|| {
        MariaDb::dedicated_with(&Options {
            args: vec![
                "--max-connections=12000".to_owned(),
                "--open-files-limit=40000".to_owned(),
                "--back-log=4000".to_owned(),
                "--thread-cache-size=4000".to_owned(),
                "--performance-schema=OFF".to_owned(),
            ],
        })
    });
    if let Some(db) = &server {
        if let Some(pid) = db.pid() {
            let _ = SERVER_PID.set(pid as i32);
        }
        let mut root = Conn::open(db.port, "root").await.expect("root logs in");
        for user in ["app", "ignored"] {
            root.execute(&format!("CREATE USER IF NOT EXISTS '{user}'@'%'"))
                .await
                .expect("create user");
        }
        let version = root
            .query_ints("SELECT CAST(SUBSTRING_INDEX(VERSION(), '.', 1) AS UNSIGNED)")
            .await
            .unwrap_or_default();
        println!("server: mariadbd {version:?}.x on 127.0.0.1:{}\n", db.port);
    }
    if args.iter().any(|a| a == "probe") {
        let db = server.as_ref().unwrap();
        let storm = Storm::open(db.port, Duration::ZERO).await;
        let mut root = Conn::open(db.port, "root").await.unwrap();
        let ids = root
            .query_ints("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
            .await
            .unwrap();
        for b in [1usize, 64, 256, 1000] {
            let sql = format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({})",
                id_list(&ids[..b])
            );
            let t = Instant::now();
            for _ in 0..20 {
                root.query_ints(&sql).await.unwrap();
            }
            println!(
                "probe: re-check of {b} ids among {} sessions: {:.2} ms",
                ids.len(),
                t.elapsed().as_secs_f64() * 1e3 / 20.0
            );
        }
        // What one listing costs, by statement: the snapshot's and a first
        // round's re-check (2 lanes x 250 ids), as the mysql provider writes them
        // for a policy that reads neither statements nor transactions, against the
        // cheapest listings the server has. (`SHOW PROCESSLIST` has whole seconds
        // and no query id, and cannot be asked for some ids only: the provider
        // re-checks with it when whole seconds decide.)
        let ours = "SELECT p.ID, p.USER, p.HOST, p.DB, p.COMMAND, CAST(p.TIME_MS AS CHAR), \
                    p.STATE, NULL, p.QUERY_ID, NULL, NULL FROM information_schema.PROCESSLIST p";
        for (what, sql) in [
            ("the snapshot's listing", ours.to_owned()),
            (
                "a re-check of 500 ids",
                format!("{ours} WHERE p.ID IN ({})", id_list(&ids[..500])),
            ),
            (
                "SELECT ID FROM information_schema.PROCESSLIST",
                "SELECT ID FROM information_schema.PROCESSLIST".to_owned(),
            ),
            ("SHOW PROCESSLIST", "SHOW PROCESSLIST".to_owned()),
        ] {
            let t = Instant::now();
            let mut rows = 0;
            for _ in 0..20 {
                rows = root.query_rows(&sql).await.unwrap();
            }
            println!(
                "probe: {what} ({rows} rows): {:.2} ms",
                t.elapsed().as_secs_f64() * 1e3 / 20.0
            );
        }
        drop(storm);
        // The mysql provider's rounds, by hand: 3,000 kills in rounds of 500 over
        // two lanes, each round re-checked first, or re-checked on a third
        // connection while the round before it is killed; or re-checked first
        // by `SHOW PROCESSLIST`, as the provider does when whole seconds decide.
        // Alternated, three times.
        for _ in 0..3 {
            for (listing, overlapped) in [(ours, false), (ours, true), ("SHOW PROCESSLIST", false)]
            {
                let took = rounds(db.port, listing, overlapped).await;
                println!(
                    "probe: rounds of 500 kills, each re-checked {} {}: {:.0} ms",
                    if listing.starts_with("SHOW") {
                        "by SHOW PROCESSLIST"
                    } else {
                        "by the SELECT"
                    },
                    if overlapped {
                        "during the round before"
                    } else {
                        "between rounds"
                    },
                    took.as_secs_f64() * 1e3
                );
            }
        }
        for (k, batch) in [(1usize, 100usize), (2, 100), (4, 100), (2, 25), (2, 400)] {
            let storm = Storm::open(db.port, Duration::ZERO).await;
            let mut killers = open_many(db.port, "root", k).await;
            let start = Instant::now();
            let ids = killers[0]
                .query_ints("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
                .await
                .unwrap();
            let parts: Vec<Vec<u64>> = (0..k)
                .map(|i| ids.iter().copied().skip(i).step_by(k).collect())
                .collect();
            futures::future::join_all(killers.iter_mut().zip(parts).map(|(c, ids)| async move {
                for b in ids.chunks(batch) {
                    let (ok, err) = c.execute_many(&kill_packet(b)).await.unwrap();
                    assert_eq!((ok, err), (b.len(), None));
                }
            }))
            .await;
            let (r, _) = storm.cleared(start, Duration::from_secs(30)).await;
            println!(
                "probe: multi-statement kills, k={k}, {batch} per packet: {:.0} ms",
                r.unwrap().as_secs_f64() * 1e3
            );
        }
        return;
    }
    if wants("storm") {
        storm(server.as_ref().unwrap(), reps, pt_kill.as_deref()).await;
    }
    if wants("reaction") {
        reaction(server.as_ref().unwrap(), pt_kill.as_deref()).await;
    }
    if wants("footprint") {
        footprint(server.as_ref().unwrap()).await;
    }
    if wants("growth") {
        growth().await;
    }
}

// ---------------------------------------------------------------------------
// The storm

/// 3,000 idle `app` sessions (each watched for the moment the server closes it) and
/// 50 ignored ones, all idle for at least `idle` when this returns.
struct Storm {
    app: Vec<JoinHandle<Instant>>,
    ignored: Vec<Conn>,
}

/// Clears a storm as the mysql provider's kill rounds do (a re-check read of 500
/// ids with `listing`, then 250 `KILL`s on each of two lanes), with each round's
/// re-check between rounds or, `overlapped`, during the round before it.
async fn rounds(port: u16, listing: &str, overlapped: bool) -> Duration {
    let storm = Storm::open(port, Duration::ZERO).await;
    let mut conns = open_many(port, "root", 3).await;
    let start = Instant::now();
    let ids = conns[0]
        .query_ints("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app'")
        .await
        .unwrap();
    // `SHOW PROCESSLIST` cannot be asked for some ids only: it lists them all.
    let recheck = |round: &[u64]| {
        if listing.starts_with("SHOW") {
            listing.to_owned()
        } else {
            format!("{listing} WHERE p.ID IN ({})", id_list(round))
        }
    };
    let [a, b, reader] = &mut conns[..] else {
        unreachable!("three connections")
    };
    let rounds: Vec<&[u64]> = ids.chunks(500).collect();
    if overlapped {
        reader.query_rows(&recheck(rounds[0])).await.unwrap();
    }
    for (i, round) in rounds.iter().enumerate() {
        if !overlapped {
            reader.query_rows(&recheck(round)).await.unwrap();
        }
        let (x, y) = round.split_at(round.len() / 2);
        let (x, y) = (kill_packet(x), kill_packet(y));
        let kills = futures::future::join(a.execute_many(&x), b.execute_many(&y));
        let next = rounds.get(i + 1).filter(|_| overlapped).map(|n| recheck(n));
        let ((x, y), read) = match next {
            Some(next) => futures::future::join(kills, reader.query_rows(&next)).await,
            None => (kills.await, Ok(0)),
        };
        read.unwrap();
        assert_eq!((x.unwrap().0, y.unwrap().0), (250, 250));
    }
    let (cleared, _) = storm.cleared(start, Duration::from_secs(30)).await;
    cleared.expect("the storm is cleared")
}

/// `1,2,3`.
fn id_list(ids: &[u64]) -> String {
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    ids.join(",")
}

/// `KILL CONNECTION 1;KILL CONNECTION 2`: one packet of statements.
fn kill_packet(ids: &[u64]) -> String {
    let kills: Vec<String> = ids
        .iter()
        .map(|id| format!("KILL CONNECTION {id}"))
        .collect();
    kills.join(";")
}

async fn open_many(port: u16, user: &str, n: usize) -> Vec<Conn> {
    futures::stream::iter(0..n)
        .map(|_| Conn::open(port, user))
        .buffer_unordered(64)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("opening {n} sessions of {user}: {e}"))
}

impl Storm {
    async fn open(port: u16, idle: Duration) -> Storm {
        let ignored = open_many(port, "ignored", IGNORED).await;
        let app = open_many(port, "app", APP).await;
        let youngest = app.iter().map(|c| c.opened_at).max().unwrap();
        let app = app.into_iter().map(|c| tokio::spawn(c.closed())).collect();
        tokio::time::sleep_until((youngest + idle).into()).await;
        Storm { app, ignored }
    }

    /// From `start` until the last `app` session was closed, or `None` (with the
    /// number left) when they were not all gone within `limit`.
    async fn cleared(self, start: Instant, limit: Duration) -> (Result<Duration, usize>, usize) {
        let all = futures::future::join_all(self.app);
        let result = match tokio::time::timeout(limit, all).await {
            Ok(closed) => {
                let closed: Vec<Instant> = closed.into_iter().map(|c| c.unwrap()).collect();
                let first = closed.iter().min().unwrap();
                let last = closed.iter().max().unwrap();
                if std::env::var_os("STORM_VERBOSE").is_some() {
                    println!(
                        "  first kill after {:.1} ms, last {:.1} ms after the first",
                        first.saturating_duration_since(start).as_secs_f64() * 1e3,
                        last.saturating_duration_since(*first).as_secs_f64() * 1e3
                    );
                }
                Ok(last.saturating_duration_since(start))
            }
            Err(_) => Err(APP),
        };
        let mut alive = 0;
        for mut c in self.ignored {
            if c.ping().await {
                alive += 1;
            }
        }
        (result, alive)
    }
}

/// The floor: one listing of the `app` sessions, then `KILL CONNECTION` in a tight
/// loop over `k` connections opened beforehand.
/// The server's CPU time so far (user + system, all its threads, those that ended
/// included), to tell how much work a tool's run costs the server.
static SERVER_PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

fn server_cpu() -> Duration {
    SERVER_PID
        .get()
        .map_or(Duration::ZERO, |&pid| proc_cpu(pid))
}

/// The floor's time to clear the storm, and the server's CPU time over it.
async fn floor(port: u16, k: usize) -> (Duration, Duration) {
    let storm = Storm::open(port, Duration::from_millis(1300)).await;
    let mut killers = open_many(port, "root", k).await;
    let start = Instant::now();
    let server_before = server_cpu();
    let ids = killers[0]
        .query_ints(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'app' AND COMMAND = 'Sleep'",
        )
        .await
        .expect("list");
    assert_eq!(ids.len(), APP, "every app session is listed");
    let parts: Vec<Vec<u64>> = (0..k)
        .map(|i| ids.iter().copied().skip(i).step_by(k).collect())
        .collect();
    futures::future::join_all(killers.iter_mut().zip(parts).map(|(c, ids)| async move {
        for id in ids {
            c.execute(&format!("KILL CONNECTION {id}"))
                .await
                .expect("kill");
        }
    }))
    .await;
    let (result, alive) = storm.cleared(start, Duration::from_secs(30)).await;
    let server = server_cpu().saturating_sub(server_before);
    assert_eq!(alive, IGNORED, "the floor killed only app sessions");
    (result.expect("the floor clears the storm"), server)
}

struct ToolRun {
    cleared: Result<Duration, usize>,
    cpu: Duration,
    alive: usize,
    /// The server's CPU time from the spawn until the storm was cleared.
    server_cpu: Duration,
}

/// Runs `cmd` against a fresh storm: from its spawn until the last `app` session is
/// gone; then SIGTERM and its rusage.
async fn tool_run(port: u16, mut cmd: Command) -> ToolRun {
    let storm = Storm::open(port, Duration::from_millis(1300)).await;
    let start = Instant::now();
    let server_before = server_cpu();
    let child = cmd.spawn().expect("the tool starts");
    let (cleared, alive) = storm.cleared(start, Duration::from_secs(30)).await;
    let server_cpu = server_cpu().saturating_sub(server_before);
    let cpu = stop(child).await;
    ToolRun {
        cleared,
        cpu,
        alive,
        server_cpu,
    }
}

fn pt_kill_cmd(pt_kill: &str, port: u16, idle_secs: u32) -> Command {
    let mut cmd = Command::new(pt_kill);
    cmd.args([
        "--no-version-check",
        "--host=127.0.0.1",
        &format!("--port={port}"),
        "--user=root",
        "--match-user=app",
        "--match-command=Sleep",
        &format!("--idle-time={idle_secs}"),
        "--interval=1",
        "--victims=all",
        "--kill",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    without_cargo_libraries(&mut cmd);
    cmd
}

/// Gives `cmd` the loader path it would have outside `cargo bench`. Cargo adds
/// its target directory and the toolchain's libraries to `LD_LIBRARY_PATH`, and the
/// loader then looked for `libgcc_s.so.1` in about 120 directories before the
/// system's at each start of the daemon (`strace`: 242 failed `openat` and
/// `newfstatat` calls), which an installed daemon never does.
fn without_cargo_libraries(cmd: &mut Command) {
    let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") else {
        return;
    };
    let release = Path::new(BIN).parent().unwrap_or(Path::new("/"));
    let all: Vec<PathBuf> = std::env::split_paths(&paths).collect();
    // The toolchain's `lib/rustlib/<target>/lib` says where its `lib` is.
    let toolchain: Vec<PathBuf> = all
        .iter()
        .filter_map(|p| {
            let s = p.to_str()?;
            s.find("/lib/rustlib/")
                .map(|at| PathBuf::from(&s[..at + 4]))
        })
        .collect();
    let kept: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| !p.starts_with(release) && !toolchain.iter().any(|t| p.starts_with(t)))
        .collect();
    if kept.is_empty() {
        cmd.env_remove("LD_LIBRARY_PATH");
    } else if let Ok(joined) = std::env::join_paths(kept) {
        cmd.env("LD_LIBRARY_PATH", joined);
    }
}

/// A daemon's directory: config, one policy, state (audit log) and its log.
struct Reaper {
    dir: tempfile::TempDir,
    /// The snapshot files of file targets, removed with the daemon's directory.
    snapshots: Option<tempfile::TempDir>,
}

impl Reaper {
    fn new(targets: &str, policies: &[(&str, String)]) -> Reaper {
        let dir = tempfile::Builder::new()
            .prefix("storm-reaper-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        for (name, text) in policies {
            std::fs::write(dir.path().join("policies").join(name), text).unwrap();
        }
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                "listen: {listen}\nstate_dir: {}\npolicies_dir: policies\nignored_users: [ignored]\ntargets:\n{targets}",
                dir.path().join("state").display()
            ),
        )
        .unwrap();
        Reaper {
            dir,
            snapshots: None,
        }
    }

    fn mysql(port: u16, schedule: &str, min_time: &str) -> Reaper {
        Reaper::new(
            &format!(
                "  - name: db\n    provider: mysql\n    url: mysql://root@127.0.0.1:{port}\n{}",
                std::env::var("STORM_POOL")
                    .map(|n| format!("    pool_size: {n}\n"))
                    .unwrap_or_default()
            ),
            &[(
                "storm.yaml",
                format!(
                    "name: storm\nschedule: {schedule}\nmode: enforce\nmatch:\n  user: app\n  command: Sleep\n  min_time: {min_time}\naction: kill\nvictims: all\n"
                ),
            )],
        )
    }

    fn command(&self) -> Command {
        // STORM_WRAP="perf record -g -o FILE --" profiles the daemon.
        let wrap = std::env::var("STORM_WRAP").unwrap_or_default();
        // STORM_BIN=PATH runs another build of the daemon (to compare two builds).
        let bin = std::env::var("STORM_BIN").unwrap_or_else(|_| BIN.to_owned());
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("daemon.log")).unwrap());
        without_cargo_libraries(&mut cmd);
        cmd
    }

    /// `recheck_to_kill_us` of every killed outcome in the audit log.
    fn recheck_windows(&self) -> Vec<u64> {
        let text =
            std::fs::read_to_string(self.dir.path().join("state/audit.jsonl")).unwrap_or_default();
        let mut out: Vec<u64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["event"] == "outcome" && r["result"] == "killed")
            .map(|r| {
                r["recheck_to_kill_us"]
                    .as_u64()
                    .expect("every kill carries its re-check window")
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

async fn storm(db: &MariaDb, reps: usize, pt_kill: Option<&str>) {
    println!("## Storm: {APP} idle `app` sessions, {IGNORED} ignored, {reps} runs each\n");
    let mut floors: Vec<[Duration; 4]> = Vec::new();
    // The server's CPU time over the best k's run, of each repetition.
    let mut floor_server: Vec<Duration> = Vec::new();
    let mut pts: Vec<ToolRun> = Vec::new();
    let mut ours: Vec<ToolRun> = Vec::new();
    let mut windows: Vec<u64> = Vec::new();
    // STORM_ONLY=session-reaper skips the floor and pt-kill (while profiling).
    let only_ours = std::env::var("STORM_ONLY").is_ok_and(|v| v == "session-reaper");
    for rep in 0..reps {
        let mut f = [Duration::ZERO; 4];
        let mut best = (Duration::MAX, Duration::ZERO);
        for (i, k) in [1, 2, 4, 8].into_iter().enumerate() {
            if !only_ours {
                let (t, server) = floor(db.port, k).await;
                f[i] = t;
                best = best.min((t, server));
            }
        }
        floors.push(f);
        floor_server.push(best.1);
        if let Some(pt) = pt_kill.filter(|_| !only_ours) {
            let run = tool_run(db.port, pt_kill_cmd(pt, db.port, 1)).await;
            assert_eq!(run.alive, IGNORED, "pt-kill spared the ignored user");
            pts.push(run);
        }
        let reaper = Reaper::mysql(db.port, "every 250ms", "1s");
        let run = tool_run(db.port, reaper.command()).await;
        assert_eq!(
            run.alive,
            IGNORED,
            "session-reaper spared the ignored user\n{}",
            reaper.log()
        );
        if run.cleared.is_err() {
            panic!("session-reaper did not clear the storm:\n{}", reaper.log());
        }
        if std::env::var_os("STORM_VERBOSE").is_some() {
            for line in reaper.log().lines().take(
                std::env::var("STORM_LOG_LINES")
                    .ok()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(12),
            ) {
                println!("  daemon: {line}");
            }
        }
        let w = reaper.recheck_windows();
        assert_eq!(
            w.len(),
            APP,
            "one audited kill, re-checked, per app session"
        );
        windows.extend(w);
        ours.push(run);
        let fmt = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1e3);
        println!(
            "run {}: floor k=1 {} k=2 {} k=4 {} k=8 {}; pt-kill {}; session-reaper {}",
            rep + 1,
            fmt(f[0]),
            fmt(f[1]),
            fmt(f[2]),
            fmt(f[3]),
            pts.last()
                .map(|r| r.cleared.map(fmt).unwrap_or_else(|n| format!("{n} left")))
                .unwrap_or_else(|| "-".to_owned()),
            fmt(ours.last().unwrap().cleared.unwrap()),
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let best_floor: Vec<f64> = floors
        .iter()
        .map(|f| f.iter().copied().map(ms).fold(f64::MAX, f64::min))
        .collect();
    let ours_t: Vec<f64> = ours.iter().map(|r| ms(r.cleared.unwrap())).collect();
    let ours_cpu: Vec<f64> = ours.iter().map(|r| ms(r.cpu)).collect();
    println!();
    println!("| | median | min | max |");
    println!("|---|---:|---:|---:|");
    for (i, k) in [1, 2, 4, 8].into_iter().enumerate() {
        let v: Vec<f64> = floors.iter().map(|f| ms(f[i])).collect();
        row(&format!("floor, k = {k} (ms)"), &v);
    }
    row("floor, best k (ms)", &best_floor);
    let pt_t: Vec<f64> = pts.iter().filter_map(|r| r.cleared.ok().map(ms)).collect();
    let pt_cpu: Vec<f64> = pts.iter().map(|r| ms(r.cpu)).collect();
    if !pts.is_empty() {
        row("pt-kill, spawn to cleared (ms)", &pt_t);
        row("pt-kill, CPU time (ms)", &pt_cpu);
    }
    row("session-reaper, spawn to cleared (ms)", &ours_t);
    row("session-reaper, CPU time (ms)", &ours_cpu);
    let server = |v: &mut dyn Iterator<Item = Duration>| v.map(ms).collect::<Vec<f64>>();
    row(
        "server CPU, floor best k (ms)",
        &server(&mut floor_server.iter().copied()),
    );
    if !pts.is_empty() {
        row(
            "server CPU, pt-kill (ms)",
            &server(&mut pts.iter().map(|r| r.server_cpu)),
        );
    }
    row(
        "server CPU, session-reaper (ms)",
        &server(&mut ours.iter().map(|r| r.server_cpu)),
    );
    println!();
    let m = |v: &[f64]| median(v);
    println!(
        "- session-reaper / floor: **{:.2}×** (goal ≤ 1.2×), medians {:.0} / {:.0} ms",
        m(&ours_t) / m(&best_floor),
        m(&ours_t),
        m(&best_floor)
    );
    if !pts.is_empty() && !pt_t.is_empty() {
        println!(
            "- pt-kill / session-reaper: **{:.2}×** faster (goal ≥ 1.5×)",
            m(&pt_t) / m(&ours_t)
        );
        println!(
            "- CPU: session-reaper {:.0} ms vs pt-kill {:.0} ms = **1/{:.1}** (goal ≤ 1/5)",
            m(&ours_cpu),
            m(&pt_cpu),
            m(&pt_cpu) / m(&ours_cpu)
        );
    }
    let mut windows: Vec<f64> = windows.iter().map(|us| *us as f64 / 1e3).collect();
    windows.sort_by(f64::total_cmp);
    println!(
        "- re-check → kill window over {} kills: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        windows.len(),
        pctf(&windows, 50),
        pctf(&windows, 99),
        windows.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "- every ignored session alive after every run: yes ({IGNORED}/{IGNORED}, asserted)\n"
    );
}

// ---------------------------------------------------------------------------
// Reaction time

struct Crossing {
    /// Before the connection was opened: no kill may come before this + threshold.
    before: Instant,
    opened: Instant,
    closed: JoinHandle<Instant>,
}

/// Opens `n` sessions `spacing` apart while `cmd` runs; the kill of each relative to
/// its crossing of `threshold`.
async fn crossings(
    port: u16,
    mut cmd: Command,
    n: usize,
    spacing: Duration,
    threshold: Duration,
) -> (Vec<f64>, usize, usize) {
    let child = cmd.spawn().expect("the tool starts");
    // Let it start and connect; sessions opened now are all counted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t0 = Instant::now();
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((t0 + spacing * i as u32).into()).await;
        let before = Instant::now();
        let c = Conn::open(port, "app").await.expect("open");
        sessions.push(Crossing {
            before,
            opened: c.opened_at,
            closed: tokio::spawn(c.closed()),
        });
    }
    let deadline = Instant::now() + threshold + Duration::from_secs(3);
    let mut reactions = Vec::new();
    let (mut early, mut missed) = (0, 0);
    for s in sessions {
        match tokio::time::timeout_at(deadline.into(), s.closed).await {
            Ok(Ok(closed)) => {
                if closed < s.before + threshold {
                    early += 1;
                }
                let crossed = s.opened + threshold;
                reactions.push(closed.saturating_duration_since(crossed).as_secs_f64() * 1e3);
            }
            _ => missed += 1,
        }
    }
    stop(child).await;
    reactions.sort_by(f64::total_cmp);
    (reactions, early, missed)
}

async fn reaction(db: &MariaDb, pt_kill: Option<&str>) {
    let n = 240;
    let threshold = Duration::from_secs(2);
    println!("## Reaction: {n} sessions opened 12.5 ms apart cross a 2 s idle threshold\n");
    println!("| tool | interval | p50 | p99 | max | killed early | not killed | goal p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut runs: Vec<(String, u64, Command, Option<Reaper>)> = Vec::new();
    for ms in [250u64, 50] {
        let reaper = Reaper::mysql(db.port, &format!("every {ms}ms"), "2s");
        runs.push((
            "session-reaper".to_owned(),
            ms,
            reaper.command(),
            Some(reaper),
        ));
    }
    if let Some(pt) = pt_kill {
        runs.push((
            "pt-kill".to_owned(),
            1000,
            pt_kill_cmd(pt, db.port, 2),
            None,
        ));
    }
    let mut p99s = Vec::new();
    for (tool, interval, cmd, reaper) in runs {
        let (r, early, missed) =
            crossings(db.port, cmd, n, Duration::from_micros(12_500), threshold).await;
        let p99 = pctf(&r, 99);
        p99s.push((tool.clone(), interval, p99));
        println!(
            "| {tool} | {interval} ms | {:.0} ms | {:.0} ms | {:.0} ms | {early} | {missed} | {} |",
            pctf(&r, 50),
            p99,
            r.last().copied().unwrap_or(f64::NAN),
            if tool == "pt-kill" {
                "-".to_owned()
            } else {
                format!("≤ {} ms", interval + 25)
            }
        );
        if let Some(reaper) = reaper
            && (early > 0 || missed > 0)
        {
            println!("\ndaemon log:\n{}", reaper.log());
        }
    }
    if let Some((_, _, pt)) = p99s.iter().find(|(t, _, _)| t == "pt-kill") {
        for (tool, interval, p99) in &p99s {
            if tool == "pt-kill" {
                continue;
            }
            // The goal is p99 ≤ interval + 25 ms, which is ≥ 10× pt-kill's where that
            // bound is a tenth of pt-kill's 1 s interval or less (at 50 ms). At 250 ms
            // the goal bound itself is 275 ms: no more than about 3.6× can be asked.
            let goal = if (interval + 25) * 10 <= 1000 {
                "goal ≥ 10×"
            } else {
                "the 10× goal is for the 50 ms schedule"
            };
            println!(
                "\n- p99 pt-kill / session-reaper at {interval} ms: **{:.1}×** ({goal})",
                pt / p99
            );
        }
    }
    println!();
}

// ---------------------------------------------------------------------------
// Footprint and growth

/// The shipped policies, run every second.
fn shipped_policies() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("schedule:") {
                    "schedule: every 1s".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        out.push((path.file_name().unwrap().to_str().unwrap().to_owned(), text));
    }
    out
}

/// A daemon over `targets` file targets of `sessions` sessions each.
fn file_reaper(targets: usize, sessions: usize) -> Reaper {
    let dir = tempfile::Builder::new()
        .prefix("storm-snapshots-")
        .tempdir()
        .unwrap();
    let mut yaml = String::new();
    for t in 0..targets {
        let mut snap = workload::snapshot(sessions, t as u64 + 1);
        snap.target = format!("t{t}");
        let path = dir.path().join(format!("t{t}.json"));
        std::fs::write(&path, serde_json::to_vec(&snap).unwrap()).unwrap();
        yaml.push_str(&format!(
            "  - name: t{t}\n    provider: file\n    path: {}\n",
            path.display()
        ));
    }
    let policies = shipped_policies();
    let refs: Vec<(&str, String)> = policies
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    let mut reaper = Reaper::new(&yaml, &refs);
    reaper.snapshots = Some(dir);
    reaper
}

struct Usage {
    rss_peak_kb: u64,
    cpu_per_s: Duration,
}

/// Runs the daemon `warmup`, then samples its RSS and CPU for `window`.
async fn usage(reaper: &Reaper, warmup: Duration, window: Duration) -> Usage {
    let child = reaper.command().spawn().expect("the daemon starts");
    let pid = child.id() as i32;
    tokio::time::sleep(warmup).await;
    let (cpu0, t0) = (proc_cpu(pid), Instant::now());
    let mut peak = 0;
    while t0.elapsed() < window {
        peak = peak.max(proc_status(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (cpu1, elapsed) = (proc_cpu(pid), t0.elapsed());
    peak = peak.max(proc_status(pid, "VmHWM:"));
    let log = reaper.log();
    stop(child).await;
    assert!(
        !log.contains("ERROR"),
        "the daemon ran without errors:\n{log}"
    );
    Usage {
        rss_peak_kb: peak,
        cpu_per_s: (cpu1 - cpu0).div_f64(elapsed.as_secs_f64()),
    }
}

async fn footprint(db: &MariaDb) {
    println!("## Footprint\n");
    println!("| daemon | RSS peak | goal | CPU (share of one core) | goal |");
    println!("|---|---:|---:|---:|---:|");
    let u = usage(
        &file_reaper(10, 1000),
        Duration::from_secs(2),
        Duration::from_secs(6),
    )
    .await;
    println!(
        "| 10 file targets × 1,000 sessions, 4 policies every 1 s | {:.1} MB | < 20 MB | {:.2} % | |",
        u.rss_peak_kb as f64 / 1024.0,
        u.cpu_per_s.as_secs_f64() * 100.0
    );
    for (n, goal_rss, goal_cpu) in [(1_000, "", "< 1 %"), (10_000, "< 30 MB", "")] {
        let crowd = open_many(db.port, "app", n).await;
        let reaper = Reaper::mysql(db.port, "every 1s", "1h");
        let u = usage(&reaper, Duration::from_secs(3), Duration::from_secs(10)).await;
        println!(
            "| one MariaDB server, {n} idle sessions, policy every 1 s | {:.1} MB | {goal_rss} | {:.2} % | {goal_cpu} |",
            u.rss_peak_kb as f64 / 1024.0,
            u.cpu_per_s.as_secs_f64() * 100.0
        );
        drop(crowd);
    }
    println!();
}

async fn growth() {
    println!("## Growth (file targets, the 4 shipped policies every 1 s)\n");
    let policies = workload::policies(50);
    let refs: Vec<_> = policies.iter().collect();
    let protected = Protected {
        accounts: vec!["rdsAdmin".to_owned()],
        max_snapshot_age: None,
    };
    // The median of enough plans to take about a second (at least 7).
    let plan_of = |snap: &Snapshot| {
        let reps = (2_000_000 / snap.sessions.len().max(1)).clamp(7, 2_000);
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(plan(snap, &refs, &protected, workload::now()));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[reps / 2]
    };
    let plan_ms = |n: usize| plan_of(&workload::snapshot(n, 42));
    println!(
        "| targets × sessions | plan, 50 policies (all targets) | daemon RSS peak | CPU per tick |"
    );
    println!("|---|---:|---:|---:|");
    let one_k = plan_ms(1_000);
    for (targets, sessions) in [
        (1, 1_000),
        (1, 10_000),
        (1, 100_000),
        (10, 1_000),
        (100, 1_000),
    ] {
        let p = if sessions == 1_000 {
            one_k * targets as f64
        } else {
            plan_ms(sessions)
        };
        let u = usage(
            &file_reaper(targets, sessions),
            Duration::from_secs(3),
            Duration::from_secs(6),
        )
        .await;
        println!(
            "| {targets} × {sessions} | {p:.2} ms | {:.1} MB | {:.1} ms |",
            u.rss_peak_kb as f64 / 1024.0,
            u.cpu_per_s.as_secs_f64() * 1e3
        );
    }
    println!();
    // Where the time per session steps up: as the snapshot (the sessions and
    // the strings they own) outgrows each level of the caches.
    println!("`plan` with 50 policies per session, by the size of the snapshot it reads:\n");
    println!("| sessions | snapshot | plan | per session |");
    println!("|---:|---:|---:|---:|");
    for n in [
        1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 400_000,
    ] {
        let snap = workload::snapshot(n, 42);
        let ms = plan_of(&snap);
        println!(
            "| {n} | {:.1} MB | {ms:.2} ms | {:.1} ns |",
            snapshot_bytes(&snap) as f64 / 1e6,
            ms * 1e6 / n as f64
        );
    }
    println!();
}

/// What a snapshot's sessions take in memory: the sessions themselves and the
/// strings they own (short ones are kept inside the session).
fn snapshot_bytes(snap: &Snapshot) -> usize {
    snap.sessions
        .iter()
        .map(|s| {
            let texts = [&s.user, &s.host, &s.db, &s.state, &s.template_id, &s.node];
            std::mem::size_of::<Session>()
                + s.sql.as_ref().map_or(0, String::capacity)
                + texts
                    .iter()
                    .filter_map(|t| t.as_ref())
                    .chain([&s.command])
                    .chain(s.trx.as_ref().map(|t| &t.id))
                    .filter(|t| t.is_heap_allocated())
                    .map(|t| t.capacity())
                    .sum::<usize>()
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Processes and statistics

/// SIGTERM, then the process's CPU time (user + system) from `wait4`'s rusage.
async fn stop(child: std::process::Child) -> Duration {
    let pid = child.id() as i32;
    // The child is reaped here, by wait4, not by std.
    std::mem::forget(child);
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    tokio::task::spawn_blocking(move || {
        let mut status = 0;
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        assert_eq!(r, pid, "wait4");
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        if std::env::var_os("STORM_VERBOSE").is_some() {
            println!(
                "  pid {pid}: user {:.1} ms, system {:.1} ms, {} voluntary and {} involuntary context switches, {} minor faults",
                tv(usage.ru_utime).as_secs_f64() * 1e3,
                tv(usage.ru_stime).as_secs_f64() * 1e3,
                usage.ru_nvcsw,
                usage.ru_nivcsw,
                usage.ru_minflt
            );
        }
        tv(usage.ru_utime) + tv(usage.ru_stime)
    })
    .await
    .unwrap()
}

/// CPU time of a running process (all its threads, ended ones included), from its
/// CPU clock (nanoseconds), or from /proc in clock ticks (10 ms: a quiet daemon's
/// few milliseconds a second would read as 0 or 10) where that clock is refused.
fn proc_cpu(pid: i32) -> Duration {
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: both calls only write the values they are given.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } == 0
        && unsafe { libc::clock_gettime(clock, &mut ts) } == 0
    {
        return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn proc_status(pid: i32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn raise_fd_limit() {
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

fn which(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d: PathBuf| d.join(program))
        .find(|p| p.is_file())
        .map(|p| p.display().to_string())
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn row(label: &str, v: &[f64]) {
    let min = v.iter().copied().fold(f64::MAX, f64::min);
    let max = v.iter().copied().fold(f64::MIN, f64::max);
    println!("| {label} | {:.0} | {min:.0} | {max:.0} |", median(v));
}

fn pctf(sorted: &[f64], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) * p) / 100]
}
