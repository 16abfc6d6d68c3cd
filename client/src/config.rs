//! Where the client finds its server, token and database: command-line flags first, then the
//! environment (`TASKS_URL`, `TASKS_TOKEN`, `TASKS_DB`; clap reads those with the flags), then
//! a TOML file (`--config`, `TASKS_CONFIG`, or `config.toml` in the platform's config
//! directory), then defaults (`http://localhost:3000`, the platform's data directory).
//!
//! ```toml
//! url = "https://tasks.example.com"
//! token = "eyJ…"            # a bearer token; omit for a server in development mode
//! db = "/home/me/tasks.db"
//! batch_size = 500          # items per push, at most 1000
//! ```

use std::path::{Path, PathBuf};

use directories::ProjectDirs;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The server of the local stack.
pub const DEFAULT_URL: &str = "http://localhost:3000";

/// The config file's keys, all optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub url: Option<String>,
    pub token: Option<String>,
    pub db: Option<PathBuf>,
    pub batch_size: Option<usize>,
}

fn dirs() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "tasksync")
}

/// `config.toml` in the platform's config directory (e.g. `~/.config/tasksync/`).
pub fn default_config_path() -> Option<PathBuf> {
    dirs().map(|d| d.config_dir().join("config.toml"))
}

/// `tasks.db` in the platform's data directory (e.g. `~/.local/share/tasksync/`).
pub fn default_db_path() -> Result<PathBuf> {
    dirs()
        .map(|d| d.data_dir().join("tasks.db"))
        .ok_or_else(|| Error::Config("no home directory: give the database with --db".into()))
}

/// Reads the config file at `path`. A missing file is an empty config unless it was named
/// explicitly.
pub fn load_file(path: Option<&Path>) -> Result<FileConfig> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => match default_config_path() {
            Some(p) => (p, false),
            None => return Ok(FileConfig::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_reads_its_keys_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "url = \"http://h:1\"\ntoken = \"t\"\nbatch_size = 10\n",
        )
        .unwrap();
        let config = load_file(Some(&path)).unwrap();
        assert_eq!(config.url.as_deref(), Some("http://h:1"));
        assert_eq!(config.batch_size, Some(10));
        std::fs::write(&path, "uri = \"typo\"\n").unwrap();
        assert!(
            load_file(Some(&path))
                .unwrap_err()
                .to_string()
                .contains("uri")
        );
        assert!(load_file(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
