//! The format-version file of a data directory, and the creation marker before it.
//!
//! A new directory gets a creation marker (fsync'd, with its directory) *before* fjall
//! creates anything, and the version file only *after* the engine's keyspace and
//! partitions exist in full. fjall's own first creation is not atomic: a process killed
//! between an LSM tree's manifest and its level manifest leaves a directory fjall cannot
//! reopen (seen as "No such file or directory" in the crash test). So:
//!
//! - version file present: the directory is complete; a directory written by a newer
//!   build is refused before the engine touches it;
//! - creation marker, no version file: a creation of ours was cut short before the first
//!   open returned, so nothing was ever written to it; it is emptied and created again;
//! - neither, but other files: not ours, refused.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::StorageError;

/// Format version written by this build. Bump on any incompatible layout change.
///
/// - 1: rows as in `codec.rs`; an entity's home (the member pre-authorised for its
///   entry 1) was picked by an FNV hash.
/// - 2: the same rows; the home is the owner of the entity's Redis Cluster hash slot
///   (`node::route::home`). A format-1 directory is refused rather than read: its
///   members may hold entry-1 acceptances made with the old home's reserved ballot,
///   and a new home skipping prepare could overwrite a chosen value.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const FORMAT_FILE: &str = "STORAGE_FORMAT";
const FORMAT_TMP: &str = "STORAGE_FORMAT.tmp";
pub(crate) const CREATING_FILE: &str = "STORAGE_CREATING";
const PREFIX: &str = "paxosstore-storage format ";

/// What [`check_or_init`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A complete directory of this format.
    Complete,
    /// An empty (or emptied) directory, now holding the creation marker: the caller
    /// creates the engine's files and then calls [`finish_creation`].
    Creating,
}

/// Checks the directory's version, preparing an empty, missing or half-created one.
pub(crate) fn check_or_init(dir: &Path) -> Result<Found, StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
    let file = dir.join(FORMAT_FILE);
    match fs::read(&file) {
        Ok(bytes) => {
            check(dir, &file, &bytes)?;
            // Killed between the version file and the marker's removal: complete.
            remove_if_present(&dir.join(CREATING_FILE))?;
            Ok(Found::Complete)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => init(dir),
        Err(e) => Err(StorageError::io(&file, e)),
    }
}

/// Marks a directory the engine has fully created as complete.
pub(crate) fn finish_creation(dir: &Path) -> Result<(), StorageError> {
    write_version(dir, FORMAT_VERSION)?;
    remove_if_present(&dir.join(CREATING_FILE))?;
    sync_dir(dir)
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

fn init(dir: &Path) -> Result<Found, StorageError> {
    let mut others = Vec::new();
    let mut ours = false;
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        if name == CREATING_FILE {
            ours = true;
        } else {
            others.push(entry.path());
        }
    }
    if !ours {
        let foreign = others
            .iter()
            .any(|p| p.file_name() != Some(FORMAT_TMP.as_ref()));
        if foreign {
            return Err(StorageError::UnsupportedFormat {
                dir: dir.to_path_buf(),
                found: format!("no {FORMAT_FILE} file in a non-empty directory"),
                supported: FORMAT_VERSION,
            });
        }
        let marker = dir.join(CREATING_FILE);
        let f = fs::File::create(&marker).map_err(|e| StorageError::io(&marker, e))?;
        f.sync_all().map_err(|e| StorageError::io(&marker, e))?;
        sync_dir(dir)?;
    }
    // Whatever else is here is a creation of ours cut short: no open ever returned on
    // it, so it holds no data.
    for path in others {
        let removed = if path.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| StorageError::io(&path, e))?;
    }
    sync_dir(dir)?;
    Ok(Found::Creating)
}

fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
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
    sync_dir(dir)
}
