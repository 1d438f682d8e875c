//! The `file` provider: replays a recorded snapshot (what `sessions --format json`
//! writes) for what-if runs, tests and the quick start. It never kills: every kill
//! is reported as a would-kill.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    let path = if Path::new(raw).is_absolute() {
        PathBuf::from(raw)
    } else {
        base.join(raw)
    };
    if let Err(e) = read_snapshot(&path) {
        v.error(
            e,
            Some(
                "record one with `session-reaper sessions --target T --format json > FILE`"
                    .to_owned(),
            ),
        );
        return None;
    }
    Some(Arc::new(FileFactory { path }))
}

#[derive(Debug)]
struct FileFactory {
    path: PathBuf,
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
        Arc::new(FileProvider {
            target: target.to_owned(),
            path: self.path.clone(),
        })
    }
}

pub struct FileProvider {
    target: String,
    path: PathBuf,
}

impl FileProvider {
    pub fn new(target: &str, path: &Path) -> FileProvider {
        FileProvider {
            target: target.to_owned(),
            path: path.to_owned(),
        }
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
        sessions,
    })
}

#[async_trait]
impl Provider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    async fn snapshot(&self, _want: &Want) -> Result<Snapshot, ProviderError> {
        let path = self.path.clone();
        let read = tokio::task::spawn_blocking(move || read_snapshot(&path)).await;
        let mut snapshot = match read {
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
        // A replay is read as if it were taken now: session times are durations.
        snapshot.taken_at = Utc::now();
        snapshot.target = self.target.clone();
        Ok(snapshot)
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
