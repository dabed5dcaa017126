//! Why llamacc could not use the cache for a compile (it then runs the compiler directly).

use std::path::{Path, PathBuf};

/// A failure of llamacc's own machinery, never of the compile itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CcError {
    /// The compiler could not be identified.
    #[error("cannot identify the compiler {path}: {message}")]
    Probe {
        /// The program probed.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An input could not be read for hashing.
    #[error("cannot read {path}: {message}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] llama_core::StoreError),
    /// Running or recording the compile failed.
    #[error(transparent)]
    Exec(#[from] llama_exec::ExecError),
    /// The compiler could not be started.
    #[error("cannot run {path}: {message}")]
    Spawn {
        /// The compiler.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl CcError {
    pub(crate) fn probe(path: &Path, message: String) -> CcError {
        CcError::Probe {
            path: path.to_path_buf(),
            message,
        }
    }

    pub(crate) fn input(path: &Path, message: impl ToString) -> CcError {
        CcError::Input {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
