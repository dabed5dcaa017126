//! Blobs kept zstd-compressed, under `cas-z/` beside `cas/`.
//!
//! Which blobs: those the store copies in ([`Store::put_bytes`], [`Store::put_file`]: llamacc's
//! objects and depfiles, stdout and stderr, trees), at least [`MIN_COMPRESSED`] bytes long,
//! when the frame saves at least an eighth. Not: files it adopts by link (the outputs of
//! actions run here, downloads), which would cost the copy that adopting saves, nor the
//! executable copies and the blobs laid out by link, which must be the content itself
//! (a blob held only compressed is decompressed to `cas/` the first time it is linked).
//! `bench/cache-compression.sh` measured what this buys and costs (bench/RESULTS.md).
//!
//! A compressed blob is one zstd frame whose header carries the content's size, so that
//! "present with this digest's size" costs one small read, as a stat does for `cas/`. It
//! follows every rule of a raw blob: staged in `tmp/` and renamed into place without
//! replacing, verified against its digest on every read (a frame that does not decode is
//! damage like a wrong hash: removed and reported, never served), aged by its modification
//! time, evicted by its size on disk.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::{Store, StoreError, shard_path};
use crate::digest::{Digest, HashingWriter};

/// The directory of compressed blobs, beside `cas/`.
pub(super) const COMPRESSED_DIR: &str = "cas-z";

/// Smaller blobs stay raw: a frame's header and checksum would eat what compressing saves.
pub const MIN_COMPRESSED: u64 = 512;

/// zstd's level: 1, its fastest. On llamacc's objects level 3 gained 1% (2.74× vs 2.77× on
/// lua's) for more time on every miss.
const LEVEL: i32 = 1;

/// The longest zstd frame header (`ZSTD_FRAMEHEADERSIZE_MAX`).
const FRAME_HEADER_MAX: usize = 18;

/// A blob opened for reading: its file, raw or decompressing, and where it is.
pub(super) struct OpenBlob {
    pub(super) reader: BlobReader,
    pub(super) path: PathBuf,
}

/// The content of a blob file, as it reads.
pub(super) enum BlobReader {
    /// `cas/`: the content itself.
    Raw(File),
    /// `cas-z/`: a zstd frame, decompressed as it is read.
    Compressed(Box<zstd::stream::read::Decoder<'static, io::BufReader<File>>>),
}

impl OpenBlob {
    pub(super) fn compressed(file: File, path: PathBuf) -> io::Result<OpenBlob> {
        Ok(OpenBlob {
            reader: BlobReader::Compressed(Box::new(zstd::stream::read::Decoder::new(file)?)),
            path,
        })
    }

    /// Whether a read error means damage (a frame that does not decode) rather than the disk
    /// failing to read.
    pub(super) fn is_compressed(&self) -> bool {
        matches!(self.reader, BlobReader::Compressed(_))
    }
}

impl Read for OpenBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.reader {
            BlobReader::Raw(f) => f.read(buf),
            BlobReader::Compressed(d) => d.read(buf),
        }
    }
}

/// The content size the zstd frame header at the start of `file` declares; `None` when
/// there is no valid header or it declares none.
pub(super) fn content_size(file: &File) -> Option<u64> {
    let mut header = [0u8; FRAME_HEADER_MAX];
    let n = file.read_at(&mut header, 0).ok()?;
    zstd::zstd_safe::get_frame_content_size(&header[..n])
        .ok()
        .flatten()
}

/// A staged compressed copy and the digest of its content.
pub(super) struct Staged {
    pub(super) file: tempfile::NamedTempFile,
    pub(super) digest: Digest,
    /// Its size on disk.
    pub(super) bytes: u64,
}

impl Store {
    /// Where the compressed copy of `digest` lives (whether or not it is present).
    pub(super) fn compressed_path(&self, digest: &Digest) -> PathBuf {
        shard_path(&self.root.join(COMPRESSED_DIR), digest)
    }

    /// Whether a blob of `size` bytes is worth trying to compress.
    pub(super) fn should_compress(&self, size: u64) -> bool {
        self.compress && size >= MIN_COMPRESSED
    }

    /// Compresses the `size` bytes `src` yields into a staging file, hashing them on the way.
    /// `Ok(None)` when the frame saves less than an eighth: the caller stores it raw. An
    /// `src` that yields other than `size` bytes (a file that changed) is an error of kind
    /// `InvalidInput`.
    pub(super) fn stage_compressed(
        &self,
        src: &mut dyn Read,
        size: u64,
    ) -> Result<Option<Staged>, StoreError> {
        let tmp = self.temp_file()?;
        let tmp_path = tmp.path().to_path_buf();
        let fail = |e: io::Error| self.classify("compress into", &tmp_path, e);
        let mut encoder = zstd::stream::write::Encoder::new(tmp, LEVEL).map_err(fail)?;
        encoder.include_contentsize(true).map_err(fail)?;
        encoder.include_checksum(false).map_err(fail)?;
        encoder.set_pledged_src_size(Some(size)).map_err(fail)?;
        let mut hashing = HashingWriter::new(encoder);
        let copied = io::copy(src, &mut hashing).map_err(fail)?;
        let (encoder, digest) = hashing.finish();
        if copied != size {
            return Err(fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the content changed size while it was compressed",
            )));
        }
        let mut file = encoder.finish().map_err(fail)?;
        file.flush().map_err(fail)?;
        let bytes = file.as_file().metadata().map_err(fail)?.len();
        if bytes > size / 8 * 7 {
            return Ok(None);
        }
        Ok(Some(Staged {
            file,
            digest,
            bytes,
        }))
    }
}
