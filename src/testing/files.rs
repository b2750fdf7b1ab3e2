//! Regular files on a non-shmem filesystem: the VMA type no uffd mode
//! supports (vma_can_userfault takes anonymous, shmem and hugetlb only).

use std::os::fd::OwnedFd;
use std::path::PathBuf;

/// Candidate directories, most local first: the build's scratch directory
/// (absent inside a test VM), then the usual temporary directories.
fn dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = option_env!("CARGO_TARGET_TMPDIR") {
        v.push(PathBuf::from(d));
    }
    v.push(std::env::temp_dir());
    v.push(PathBuf::from("/var/tmp"));
    v.push(PathBuf::from("/"));
    v
}

/// An unlinked read-write regular file of `len` bytes on a filesystem that
/// is not tmpfs. Err is a SKIP reason.
pub fn non_shmem_file(len: usize) -> Result<OwnedFd, String> {
    let mut why = Vec::new();
    for dir in dirs() {
        let path = dir.join(format!("uffdtest-file-{}-{}", std::process::id(), super::gettid()));
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                why.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        let _ = std::fs::remove_file(&path);
        match nix::sys::statfs::fstatfs(&f) {
            Ok(st) if st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => {
                why.push(format!("{} is tmpfs", dir.display()));
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("fstatfs in {}: {e}", dir.display())),
        }
        f.set_len(len as u64)
            .map_err(|e| format!("ftruncate in {}: {e}", dir.display()))?;
        return Ok(f.into());
    }
    Err(format!("no writable non-tmpfs directory ({})", why.join("; ")))
}
