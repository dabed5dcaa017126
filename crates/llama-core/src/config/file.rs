//! Reading and writing the config file: where it is, where the store goes by default, and
//! updating settings in place without losing the user's comments.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, Source};

/// Sets `values` in the config file at `path`, keeping its comments, its other settings
/// and their layout; creates the file (and its directory) when absent. Each value is
/// checked first, and the file is replaced in one rename, so a failure leaves it as it was.
/// Returns the keys whose value changed.
pub(super) fn update_file(
    path: &Path,
    values: &[(&str, &str)],
) -> Result<Vec<&'static str>, ConfigError> {
    let origin = Source::File(path.to_path_buf());
    let mut checked = Vec::new();
    for (key, value) in values {
        // A fresh config per value: only the check and the table's spelling are wanted.
        let name = Config::empty().set(key, value, origin.clone())?;
        checked.push((name, *value));
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                error,
            });
        }
    };
    let mut doc: toml_edit::DocumentMut =
        text.parse()
            .map_err(|e: toml_edit::TomlError| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            })?;
    let mut changed = Vec::new();
    for (name, value) in checked {
        if doc.get(name).and_then(|v| v.as_str()) != Some(value) {
            doc[name] = toml_edit::value(value);
            changed.push(name);
        }
    }
    if changed.is_empty() {
        return Ok(changed);
    }
    let write = |path: &Path| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, doc.to_string().as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    };
    write(path).map_err(|error| ConfigError::Write {
        path: path.to_path_buf(),
        error,
    })?;
    Ok(changed)
}

pub(super) fn config_path() -> PathBuf {
    xdg_dir("XDG_CONFIG_HOME", ".config").join("llama/config.toml")
}

pub(super) fn default_dir() -> String {
    xdg_dir("XDG_CACHE_HOME", ".cache")
        .join("llama")
        .to_string_lossy()
        .into_owned()
}

fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"))
            .join(fallback),
    }
}
