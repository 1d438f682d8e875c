//! Secrets are never inline: `{env: NAME}` or `{file: PATH}`. A relative `file`
//! path is read from systemd's `$CREDENTIALS_DIRECTORY` when it is set (so
//! `LoadCredential=` works), otherwise next to the config file or, failing that, in
//! its `credentials/` directory (where the unit's `LoadCredential=` lines read them
//! from), so that `check` and `plan` run by an operator find what the service gets.

use std::path::Path;

use secrecy::SecretString;

use super::yaml::{Node, Value};

/// Reads a secret reference; errors name the variable or file, never a value.
pub fn read(value: &Value<'_>, base: &Path) -> Option<SecretString> {
    if let Node::Str(_) = value.node() {
        value.error(
            format!(
                "`{}` is written inline; secrets are never inline",
                value.name
            ),
            Some("write `{env: VARIABLE}` or `{file: /path/to/secret}`".to_owned()),
        );
        return None;
    }
    let map = value.map(&["env", "file"])?;
    match (map.get("env"), map.get("file")) {
        (Some(env), None) => {
            let name = env.name()?;
            match std::env::var(name) {
                Ok(v) => Some(SecretString::from(v)),
                Err(std::env::VarError::NotPresent) => {
                    env.error(
                        format!("missing secret: environment variable `{name}` is not set"),
                        Some(format!(
                            "export {name}=... before starting, or use `{{file: ...}}`"
                        )),
                    );
                    None
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    env.error(
                        format!("environment variable `{name}` is not valid UTF-8"),
                        None,
                    );
                    None
                }
            }
        }
        (None, Some(file)) => {
            let name = file.name()?;
            let path = resolve(name, base);
            match std::fs::read(&path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(mut s) => {
                        // One trailing newline is how editors and `echo` write files.
                        if s.ends_with('\n') {
                            s.pop();
                            if s.ends_with('\r') {
                                s.pop();
                            }
                        }
                        Some(SecretString::from(s))
                    }
                    Err(_) => {
                        file.error(
                            format!("secret file {} is not valid UTF-8", path.display()),
                            None,
                        );
                        None
                    }
                },
                Err(e) => {
                    file.error(
                        format!(
                            "missing secret: cannot read {}: {}",
                            path.display(),
                            e.kind()
                        ),
                        Some("check the path and that the daemon's user may read it".to_owned()),
                    );
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            value.error(
                format!("`{}` names both `env` and `file`", value.name),
                Some("keep one".to_owned()),
            );
            None
        }
        (None, None) => {
            value.error(
                format!("`{}` needs `env` or `file`", value.name),
                Some("write `{env: VARIABLE}` or `{file: /path/to/secret}`".to_owned()),
            );
            None
        }
    }
}

fn resolve(name: &str, base: &Path) -> std::path::PathBuf {
    let path = Path::new(name);
    if path.is_absolute() {
        return path.to_owned();
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        return crate::config::resolve(Path::new(&dir), name);
    }
    let beside = crate::config::resolve(base, name);
    let stored = crate::config::resolve(&base.join("credentials"), name);
    if !beside.exists() && stored.exists() {
        return stored;
    }
    beside
}
