//! The layer that carries `llama-runtime`: a deterministic gzip'd tar.

use super::*;

/// The layer that adds `binary` as [`RUNTIME_PATH`]: a gzip'd tar holding `usr/`,
/// `usr/local/`, `usr/local/bin/` and the binary, in that order.
///
/// The bytes depend on the binary's content alone: every entry has mtime 0, uid and gid 0,
/// mode 0755, no user or group names, and the gzip header has no time stamp, no file name
/// and the "unknown" OS. (They also depend on the deflate implementation this build links,
/// which does not change between runs.) Blocking: run it off the async threads.
pub fn runtime_layer(binary: &Path) -> Result<Layer, ImageError> {
    let read_error = |error: io::Error| ImageError::Runtime {
        path: binary.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(binary).map_err(read_error)?;
    let size = file.metadata().map_err(read_error)?.len();
    let gzip = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(HashingWriter::new(gzip));
    let write_error = |e: io::Error| ImageError::Task(format!("building the runtime layer: {e}"));
    let relative = RUNTIME_PATH.trim_start_matches('/');
    let mut parent = String::new();
    for part in relative.split('/').take(relative.split('/').count() - 1) {
        parent.push_str(part);
        parent.push('/');
        let mut header = entry_header(tar::EntryType::Directory, 0);
        tar.append_data(&mut header, &parent, io::empty())
            .map_err(write_error)?;
    }
    let mut reader = CountingReader {
        inner: file.take(size),
        count: 0,
        error: None,
    };
    let mut header = entry_header(tar::EntryType::Regular, size);
    tar.append_data(&mut header, relative, &mut reader)
        .map_err(|e| match reader.error.take() {
            Some(error) => read_error(error),
            None => write_error(e),
        })?;
    if reader.count != size {
        return Err(read_error(io::Error::other(format!(
            "it shrank from {size} to {} bytes while being read; wait for the build writing it to finish",
            reader.count
        ))));
    }
    let hashing = tar.into_inner().map_err(write_error)?;
    let (gzip, diff_id) = hashing.finish();
    let data = gzip.finish().map_err(write_error)?;
    let digest = Digest::of_bytes(&data);
    Ok(Layer {
        data,
        digest: format!("sha256:{}", digest.hex()),
        diff_id: format!("sha256:{}", diff_id.hex()),
    })
}

pub(super) fn entry_header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

/// Counts what it reads and keeps its own errors apart from the writer's.
pub(super) struct CountingReader<R> {
    pub(super) inner: R,
    pub(super) count: u64,
    pub(super) error: Option<io::Error>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.count += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let message = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(message))
            }
        }
    }
}

pub(super) fn created_by() -> String {
    format!(
        "llama {} update-function: COPY llama-runtime {RUNTIME_PATH}",
        env!("CARGO_PKG_VERSION")
    )
}
