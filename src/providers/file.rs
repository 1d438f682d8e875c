//! The `file` provider: replays a recorded snapshot (what `sessions --format json`
//! writes) for what-if runs, tests and the quick start. It never kills: every kill
//! is reported as a would-kill.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use chrono::Utc;

use super::{
    Capabilities, Factory, KillOutcome, KillRequest, KillResult, Provider, ProviderError,
    Rechecker, Spec, Want,
};
use crate::config::yaml::Map;
use crate::core::session::Snapshot;
use crate::metrics::Metrics;

pub const SPEC: Spec = Spec {
    name: "file",
    keys: &["path"],
    accounts: &[],
    parse,
};

fn parse(map: &Map<'_>, base: &Path) -> Option<Arc<dyn Factory>> {
    let v = map.require("path")?;
    let raw = v.name()?;
    let path = crate::config::resolve(base, raw);
    let stamp = stamp_of(&path);
    match read_snapshot(&path) {
        Err(e) => {
            v.error(
                e,
                Some(
                    "record one with `session-reaper sessions --target T --format json > FILE`"
                        .to_owned(),
                ),
            );
            None
        }
        Ok(snapshot) => Some(Arc::new(FileFactory {
            path,
            first: Mutex::new(stamp.map(|stamp| (stamp, snapshot))),
        })),
    }
}

struct FileFactory {
    path: PathBuf,
    /// The snapshot read when the config was checked, for the first provider
    /// built: a large file is then read and parsed once at start-up, not twice.
    /// (Twice, the first copy's freed blocks stayed resident beside the second's:
    /// `plan` over a file of 100,000 sessions peaked at 76 or 139 MB, run to
    /// run, and at 66 MB reading it once.)
    first: Mutex<Option<(FileStamp, Snapshot)>>,
}

impl std::fmt::Debug for FileFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileFactory")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Factory for FileFactory {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            transactions: true,
            kill_query: true,
            kills: false,
        }
    }

    fn default_max_snapshot_age(&self) -> Option<Duration> {
        None
    }

    fn build(&self, target: &str, _metrics: Arc<Metrics>) -> Arc<dyn Provider> {
        let provider = FileProvider::new(target, &self.path);
        if let (Ok(mut first), Ok(mut cache)) = (self.first.lock(), provider.cache.lock()) {
            *cache = first.take();
        }
        Arc::new(provider)
    }
}

pub struct FileProvider {
    target: String,
    path: PathBuf,
    /// The last snapshot read, with the file's size and modification time then: a
    /// file that did not change is not read and parsed again every tick.
    cache: Mutex<Option<(FileStamp, Snapshot)>>,
}

type FileStamp = (u64, Option<SystemTime>);

/// The file's size and modification time, if it can be read.
fn stamp_of(path: &Path) -> Option<FileStamp> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().ok()))
}

impl FileProvider {
    pub fn new(target: &str, path: &Path) -> FileProvider {
        FileProvider {
            target: target.to_owned(),
            path: path.to_owned(),
            cache: Mutex::new(None),
        }
    }

    /// A replay is read as if it were taken now: session times are durations.
    fn as_of_now(&self, mut snapshot: Snapshot) -> Snapshot {
        snapshot.taken_at = Utc::now();
        snapshot.target = self.target.clone();
        snapshot
    }

    fn cached(&self, stamp: &FileStamp) -> Option<Snapshot> {
        let cache = self.cache.lock().ok()?;
        cache
            .as_ref()
            .filter(|(s, _)| s == stamp)
            .map(|(_, snap)| snap.clone())
    }
}

/// Reads a snapshot file; the error names the file and, for bad JSON, the position.
pub fn read_snapshot(path: &Path) -> Result<Snapshot, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read snapshot {}: {e}", path.display()))?;
    parse_snapshot(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a snapshot: our own format, or a raw response of one of the cloud
/// snapshot APIs (recognised by its shape) saved from a console or an API call.
pub fn parse_snapshot(text: &str) -> Result<Snapshot, String> {
    // Our own format is read straight into its types: going through a JSON tree
    // first costs several times the file's size in memory (250 MB for 100,000
    // sessions). Only the `format` key is looked at before.
    #[derive(serde::Deserialize)]
    struct Probe {
        format: Option<serde_json::Value>,
    }
    if let Ok(probe) = serde_json::from_str::<Probe>(text)
        && probe.format.as_ref().and_then(|f| f.as_str()) == Some(Snapshot::FORMAT)
    {
        return serde_json::from_str(text).map_err(|e| format!("bad snapshot: {e}"));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON: {e} (line {}, column {})", e.line(), e.column()))?;
    match value.get("format").and_then(|f| f.as_str()) {
        Some(Snapshot::FORMAT) => {
            return serde_json::from_value(value).map_err(|e| format!("bad snapshot: {e}"));
        }
        Some(other) => {
            return Err(format!(
                "unknown snapshot format `{other}` (this version reads `{}`)",
                Snapshot::FORMAT
            ));
        }
        None => {}
    }
    let (provider, transactions, sessions) = if value.pointer("/Data/SessionData").is_some()
        || value.get("SessionData").is_some()
    {
        (
            super::alibaba::NAME,
            true,
            super::alibaba::parse_sessions(&value),
        )
    } else if value.pointer("/Response/ProcessList").is_some() || value.get("ProcessList").is_some()
    {
        (
            super::tencent::NAME,
            false,
            super::tencent::parse_sessions(&value),
        )
    } else if value.get("processes").is_some() {
        (
            super::huawei::NAME,
            true,
            super::huawei::parse_sessions(&value),
        )
    } else {
        return Err(format!(
            "not a session-reaper snapshot (no `\"format\": \"{}\"`) nor a response of GetMySQLAllSessionAsync, DescribeMySqlProcessList or the Huawei DAS processes API",
            Snapshot::FORMAT
        ));
    };
    let sessions = sessions.map_err(|e| format!("a {provider} response, but {e}"))?;
    Ok(Snapshot {
        format: Snapshot::FORMAT.to_owned(),
        target: String::new(),
        provider: provider.to_owned(),
        taken_at: Utc::now(),
        server: Default::default(),
        own_connection_ids: Vec::new(),
        transactions,
        partial: None,
        sessions: sessions.into(),
    })
}

#[async_trait]
impl Provider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn snapshot(&self, _want: &Want) -> Result<Snapshot, ProviderError> {
        let stamp = stamp_of(&self.path);
        if let Some(snapshot) = stamp.as_ref().and_then(|s| self.cached(s)) {
            return Ok(self.as_of_now(snapshot));
        }
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || read_snapshot(&path)).await;
        let snapshot = match read {
            Ok(Ok(s)) => s,
            Ok(Err(message)) => {
                return Err(ProviderError::Other {
                    target: self.target.clone(),
                    message,
                });
            }
            Err(e) => {
                return Err(ProviderError::Other {
                    target: self.target.clone(),
                    message: format!("reading the snapshot failed: {e}"),
                });
            }
        };
        if let (Some(stamp), Ok(mut cache)) = (stamp, self.cache.lock()) {
            *cache = Some((stamp, snapshot.clone()));
        }
        Ok(self.as_of_now(snapshot))
    }

    async fn kill(&self, requests: &[KillRequest], _recheck: &Rechecker<'_>) -> Vec<KillOutcome> {
        requests
            .iter()
            .map(|_| {
                KillOutcome::without_recheck(KillResult::Refused(
                    "a replayed snapshot cannot be killed".to_owned(),
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_with(ids: &[u64]) -> String {
        let sessions: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id": {id}, "user": "app", "host": "10.0.0.1", "db": null, "command": "Sleep", "time_ms": 1000, "state": null, "sql": null}}"#
                )
            })
            .collect();
        format!(
            r#"{{"format": "{}", "target": "t", "provider": "mysql", "taken_at": "2026-01-01T00:00:00Z", "transactions": false, "sessions": [{}]}}"#,
            Snapshot::FORMAT,
            sessions.join(",")
        )
    }

    /// The parsed snapshot is kept between ticks, and a file written again is read
    /// again (replays are edited while the daemon runs).
    #[tokio::test]
    async fn a_changed_file_is_read_again_and_an_unchanged_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        std::fs::write(&path, snapshot_with(&[1, 2])).unwrap();
        let p = FileProvider::new("t", &path);
        let ids = |s: &Snapshot| s.sessions.iter().map(|s| s.id).collect::<Vec<_>>();
        let first = p.snapshot(&Want::everything()).await.unwrap();
        assert_eq!(ids(&first), [1, 2]);
        assert!(p.cache.lock().unwrap().is_some(), "kept for the next tick");
        let again = p.snapshot(&Want::everything()).await.unwrap();
        assert_eq!(ids(&again), [1, 2]);
        assert!(again.taken_at >= first.taken_at, "as of each tick");
        std::fs::write(&path, snapshot_with(&[3, 4, 5])).unwrap();
        let changed = p.snapshot(&Want::everything()).await.unwrap();
        assert_eq!(ids(&changed), [3, 4, 5]);
        std::fs::write(&path, "{\"format\": ").unwrap();
        let broken = p.snapshot(&Want::everything()).await.unwrap_err();
        assert!(broken.to_string().contains("snap.json"), "{broken}");
    }

    /// The snapshot that checking the config read is the first provider's first
    /// one: the file is not read twice at start-up. Only one provider gets it, and
    /// a file changed since is read again.
    #[tokio::test]
    async fn the_first_provider_starts_with_the_snapshot_the_config_check_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        std::fs::write(&path, snapshot_with(&[1, 2])).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let config_path = dir.path().join("config.yaml");
        std::fs::write(
            &config_path,
            "targets:\n  - name: t\n    provider: file\n    path: snap.json\n",
        )
        .unwrap();
        let config = crate::config::load(&config_path).expect("valid config");
        let factory = &config.targets[0].factory;
        assert!(format!("{factory:?}").contains("snap.json"));
        // Other sessions in a file of the same size and time: a provider that
        // reads the file sees them, one that starts with the check's does not.
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, snapshot_with(&[3, 4])).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let ids = |s: Snapshot| s.sessions.iter().map(|s| s.id).collect::<Vec<_>>();
        let first = factory.build("t", Arc::new(Metrics::new()));
        let second = factory.build("t", Arc::new(Metrics::new()));
        assert_eq!(
            ids(first.snapshot(&Want::everything()).await.unwrap()),
            [1, 2]
        );
        assert_eq!(
            ids(second.snapshot(&Want::everything()).await.unwrap()),
            [3, 4],
            "only the first provider gets the check's snapshot"
        );

        // Changed between the check and the first tick: read again.
        let config = crate::config::load(&config_path).expect("valid config");
        std::fs::write(&path, snapshot_with(&[3, 4, 5])).unwrap();
        let p = config.targets[0]
            .factory
            .build("t", Arc::new(Metrics::new()));
        assert_eq!(
            ids(p.snapshot(&Want::everything()).await.unwrap()),
            [3, 4, 5]
        );
    }
}
