//! Typed storage errors. Everything that can come from disk maps to one of these;
//! nothing in this crate panics on on-disk bytes.

use std::path::PathBuf;
use std::sync::Arc;

/// Errors returned by every [`crate::Storage`] operation.
///
/// `Clone` (the io error is behind an `Arc`) so that [`crate::GroupCommit`] can hand
/// the same failure to every submitter of a failed batch.
#[derive(thiserror::Error, Debug, Clone)]
pub enum StorageError {
    /// An operating-system level I/O failure on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// Bytes on disk failed validation (bad CRC, truncated row, unknown row version...).
    /// `what` names the file, partition and/or entity so an operator can find it.
    #[error("corrupt data in {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// The data directory was written in another format version (older, newer, unknown).
    #[error("unsupported storage format in {}: found {found}, this build supports {supported}", dir.display())]
    UnsupportedFormat {
        dir: PathBuf,
        found: String,
        supported: u32,
    },
    /// The device holding `path` has no space left. Writes fail until space is freed
    /// (the fjall engine must then be reopened: it refuses writes after a failed sync).
    #[error("disk full on {}: {detail}", path.display())]
    DiskFull { path: PathBuf, detail: String },
    /// A previous write or fsync failed, so the engine refuses further writes until it is
    /// reopened (the on-disk state of the failed write is unknown; see fsyncgate).
    #[error("storage at {} is poisoned by an earlier failed write; reopen it", path.display())]
    Poisoned { path: PathBuf },
    /// Any other failure reported by the underlying engine.
    #[error("storage engine error in {}: {detail}", path.display())]
    Engine { path: PathBuf, detail: String },
    /// The storage (or group-commit writer) has been shut down.
    #[error("storage is closed")]
    Closed,
    /// Failure injected by [`crate::FailingStorage`].
    #[error("injected failure: {0}")]
    Injected(String),
}

impl StorageError {
    /// Wrap an io error with the path it concerns; ENOSPC becomes [`StorageError::DiskFull`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if is_enospc(&source) {
            return StorageError::DiskFull {
                path,
                detail: source.to_string(),
            };
        }
        StorageError::Io {
            path,
            source: Arc::new(source),
        }
    }

    /// True for [`StorageError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}

/// ENOSPC or EDQUOT (quota exceeded behaves like a full disk for us).
pub(crate) fn is_enospc(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == libc::ENOSPC || code == libc::EDQUOT)
        || e.kind() == std::io::ErrorKind::StorageFull
}
