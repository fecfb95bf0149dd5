//! The format-version file of a data directory.
//!
//! It is a plain file written (and fsync'd, with its directory) *before* fjall creates
//! anything, so a directory holding engine files but no version file is not ours, and a
//! directory written by a newer build is refused before the engine touches it.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::StorageError;

/// Format version written by this build. Bump on any incompatible layout change.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) const FORMAT_FILE: &str = "STORAGE_FORMAT";
const FORMAT_TMP: &str = "STORAGE_FORMAT.tmp";
const PREFIX: &str = "paxosstore-storage format ";

/// Checks the directory's version, initialising an empty or missing directory.
pub(crate) fn check_or_init(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let file = dir.join(FORMAT_FILE);
    match fs::read(&file) {
        Ok(bytes) => check(dir, &file, &bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => init(dir),
        Err(e) => Err(StorageError::io(&file, e)),
    }
}

fn check(dir: &Path, file: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim_end);
    let Some(num) = text.and_then(|t| t.strip_prefix(PREFIX)) else {
        return Err(StorageError::Corrupt {
            what: file.display().to_string(),
            detail: format!("not a format-version file ({} bytes)", bytes.len()),
        });
    };
    match num.parse::<u32>() {
        Ok(FORMAT_VERSION) => Ok(()),
        Ok(other) => Err(StorageError::UnsupportedFormat {
            dir: dir.to_path_buf(),
            found: other.to_string(),
            supported: FORMAT_VERSION,
        }),
        Err(_) => Err(StorageError::Corrupt {
            what: file.display().to_string(),
            detail: format!("unparsable version {:?}", num.escape_debug().to_string()),
        }),
    }
}

fn init(dir: &Path) -> Result<(), StorageError> {
    let foreign = fs::read_dir(dir)
        .map_err(|e| StorageError::io(dir, e))?
        .filter_map(Result::ok)
        .any(|d| d.file_name() != FORMAT_TMP);
    if foreign {
        return Err(StorageError::UnsupportedFormat {
            dir: dir.to_path_buf(),
            found: format!("no {FORMAT_FILE} file in a non-empty directory"),
            supported: FORMAT_VERSION,
        });
    }
    write_version(dir, FORMAT_VERSION)
}

/// Atomically (tmp + fsync + rename + fsync dir) writes a version file.
pub(crate) fn write_version(dir: &Path, version: u32) -> Result<(), StorageError> {
    let tmp = dir.join(FORMAT_TMP);
    let file = dir.join(FORMAT_FILE);
    let mut f = fs::File::create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    f.write_all(format!("{PREFIX}{version}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| StorageError::io(&tmp, e))?;
    fs::rename(&tmp, &file).map_err(|e| StorageError::io(&file, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}
