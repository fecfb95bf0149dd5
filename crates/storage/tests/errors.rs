//! IO failures surface as `StorageError`, never as panics.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use storage::{EntityUpdate, FjallOptions, FjallStorage, Storage, StorageError};

struct Mount<'a>(&'a Path);
impl Drop for Mount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

#[test]
fn disk_full_on_tiny_tmpfs_is_a_typed_error() {
    let d = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(d.path())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("SKIPPED disk_full_on_tiny_tmpfs_is_a_typed_error: cannot mount tmpfs here (not root / no CAP_SYS_ADMIN)");
        return;
    }
    let _m = Mount(d.path());
    let dir = d.path().join("data");
    let s = match FjallStorage::open(&dir, FjallOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            // Even opening may not fit; then it must be a typed disk-full error.
            assert!(e.is_disk_full(), "{e}");
            eprintln!("open itself hit disk full: {e}");
            return;
        }
    };
    let mut first_err = None;
    for n in 0..200u64 {
        let mut u = EntityUpdate::new(Bytes::from(format!("e{n}")));
        u.put_records = vec![(n, Bytes::from(vec![n as u8; 64 * 1024]))];
        if let Err(e) = s.write_batch(&[u]) {
            first_err = Some(e);
            break;
        }
    }
    let e = first_err.expect("3 MiB tmpfs never filled up with 12 MiB of writes");
    assert!(e.is_disk_full(), "expected DiskFull, got {e:?}");
    eprintln!("write hit: {e}");
    // The engine stays refusing (typed), and reads of earlier data still work.
    let mut u = EntityUpdate::new(Bytes::from_static(b"after"));
    u.meta = Some(Bytes::from_static(b"x"));
    let again = s.write_batch(&[u]).unwrap_err();
    assert!(
        matches!(
            again,
            StorageError::DiskFull { .. } | StorageError::Poisoned { .. }
        ),
        "{again:?}"
    );
    assert_eq!(s.load(b"e0").unwrap().records.len(), 1);
    std::mem::forget(s); // its background threads would race the unmount; process exit cleans up
}

#[test]
fn unwritable_directory_is_an_io_error_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = FjallStorage::open(&file, FjallOptions::default()).unwrap_err();
    assert!(matches!(err, StorageError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
