//! Manifests: what earlier compiles with the same command, compiler and source read, so a
//! later compile can find its cached result without running the compiler (ccache's "direct
//! mode", fed by the compiler's own depfile instead of the preprocessor).

use serde::{Deserialize, Serialize};

use llama_core::Digest;

/// Earlier compiles that share a pre-key (compiler, arguments, directory, environment and
/// source), newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// One entry per distinct set of headers seen.
    pub entries: Vec<Entry>,
}

/// One earlier compile: the files it read and their content, the files whose absence it
/// relied on, and the action it became.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// Every file read (absolute path, SHA-256, size).
    pub inputs: Vec<(String, [u8; 32], u64)>,
    /// Paths that did not exist and would have been read instead of an input had they
    /// existed (an earlier directory on the include path).
    pub absent: Vec<String>,
    /// Paths that existed and must still exist (`__has_include` found them).
    pub present: Vec<String>,
    /// Fingerprint of the system include directories, when the depfile left their headers
    /// out (`-MMD`).
    pub system: Option<[u8; 32]>,
    /// The action digest whose result the action cache holds.
    pub action: ([u8; 32], u64),
}

/// Entries kept per manifest: a source compiled under many different header sets is rare,
/// and each entry costs a check on every lookup.
pub const MAX_ENTRIES: usize = 8;

impl Manifest {
    /// Decodes a stored manifest; a damaged one is empty.
    pub fn decode(bytes: &[u8]) -> Manifest {
        postcard::from_bytes(bytes).unwrap_or_default()
    }

    /// Encodes for storage.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Puts `entry` first, dropping an older entry for the same action and the oldest beyond
    /// [`MAX_ENTRIES`].
    pub fn record(&mut self, entry: Entry) {
        self.entries.retain(|e| e.action != entry.action);
        self.entries.insert(0, entry);
        self.entries.truncate(MAX_ENTRIES);
    }
}

impl Entry {
    /// Encodes one entry on its own (the header list of a key record).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Decodes what [`Entry::encode`] wrote; `None` when it does not decode.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        postcard::from_bytes(bytes).ok()
    }

    /// The action digest.
    pub fn action_digest(&self) -> Digest {
        Digest::from_parts(self.action.0, self.action.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        Entry {
            inputs: vec![("/a.h".into(), [n; 32], 3)],
            absent: vec!["/b/a.h".into()],
            present: vec![],
            system: None,
            action: ([n; 32], 10),
        }
    }

    #[test]
    fn round_trips_and_keeps_newest_first() {
        let mut m = Manifest::default();
        for n in 0..10 {
            m.record(entry(n));
        }
        m.record(entry(5));
        assert_eq!(m.entries.len(), MAX_ENTRIES);
        assert_eq!(m.entries[0], entry(5));
        assert_eq!(Manifest::decode(&m.encode()), m);
        assert_eq!(Manifest::decode(b"garbage"), Manifest::default());
    }
}
