//! SHA-256 digests in the REAPI `Digest` shape.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use sha2::{Digest as _, Sha256};

/// The SHA-256 of a blob and its size: how every blob, tree and action is named.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hash: [u8; 32],
    size: u64,
}

impl Digest {
    /// The digest of an in-memory blob.
    pub fn of_bytes(data: &[u8]) -> Digest {
        Digest {
            hash: Sha256::digest(data).into(),
            size: data.len() as u64,
        }
    }

    /// The digest of everything `reader` yields, read in bounded chunks.
    pub fn of_reader<R: Read>(mut reader: R) -> io::Result<Digest> {
        let mut hasher = Hasher::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
        }
        Ok(hasher.finish())
    }

    /// The digest of a protobuf message's canonical encoding.
    pub fn of_message<M: prost::Message>(message: &M) -> Digest {
        Digest::of_bytes(&message.encode_to_vec())
    }

    /// The digest of the empty blob.
    pub fn empty() -> Digest {
        Digest::of_bytes(b"")
    }

    /// Size of the blob in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The 32 raw bytes of the hash.
    pub fn hash_bytes(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The lowercase hex hash, as REAPI and the store spell it.
    pub fn hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// Builds a digest from its parts.
    pub fn from_parts(hash: [u8; 32], size: u64) -> Digest {
        Digest { hash, size }
    }

    /// Converts to the REAPI message.
    pub fn to_proto(&self) -> reapi::Digest {
        reapi::Digest {
            hash: self.hex(),
            size_bytes: self.size as i64,
        }
    }

    /// Converts from the REAPI message, rejecting a malformed hash or a negative size.
    pub fn from_proto(proto: &reapi::Digest) -> Result<Digest, ParseDigestError> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&proto.hash, &mut hash)
            .map_err(|_| ParseDigestError(proto.hash.clone()))?;
        let size = u64::try_from(proto.size_bytes)
            .map_err(|_| ParseDigestError(format!("{}/{}", proto.hash, proto.size_bytes)))?;
        Ok(Digest { hash, size })
    }

    /// Converts an optional REAPI digest field, treating absence as malformed.
    pub fn from_field(proto: Option<&reapi::Digest>) -> Result<Digest, ParseDigestError> {
        match proto {
            Some(d) => Digest::from_proto(d),
            None => Err(ParseDigestError("<missing digest>".into())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.hex(), self.size)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

/// A digest spelled as `HASH/SIZE` (the REAPI resource-name form).
impl FromStr for Digest {
    type Err = ParseDigestError;
    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        let (hash, size) = s
            .split_once('/')
            .ok_or_else(|| ParseDigestError(s.to_string()))?;
        let size: i64 = size.parse().map_err(|_| ParseDigestError(s.to_string()))?;
        Digest::from_proto(&reapi::Digest {
            hash: hash.to_string(),
            size_bytes: size,
        })
    }
}

/// A digest that is not 64 hex digits and a non-negative size.
#[derive(Debug, Clone, thiserror::Error)]
#[error("malformed digest {0:?}: expected 64 hex digits and a size")]
pub struct ParseDigestError(String);

/// Incremental hashing, for data that arrives in pieces.
#[derive(Default)]
pub struct Hasher {
    inner: Sha256,
    size: u64,
}

impl Hasher {
    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.size += data.len() as u64;
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest {
            hash: self.inner.finalize().into(),
            size: self.size,
        }
    }
}

/// A writer that hashes what passes through it on its way to `inner`.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: io::Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::default(),
        }
    }

    /// Returns the inner writer and the digest of what was written.
    pub fn finish(self) -> (W, Digest) {
        (self.inner, self.hasher.finish())
    }
}

impl<W: io::Write> io::Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_blob_has_the_well_known_hash() {
        assert_eq!(
            Digest::empty().hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::empty().size(), 0);
    }

    #[test]
    fn reader_and_bytes_agree() {
        let data = vec![7u8; 200_000];
        assert_eq!(
            Digest::of_reader(&data[..]).unwrap(),
            Digest::of_bytes(&data)
        );
    }

    #[test]
    fn proto_and_string_round_trip() {
        let d = Digest::of_bytes(b"hello\n");
        assert_eq!(Digest::from_proto(&d.to_proto()).unwrap(), d);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("abc/1".parse::<Digest>().is_err());
        assert!(
            format!("{}/-1", d.hex()).parse::<Digest>().is_err(),
            "negative size"
        );
    }
}
