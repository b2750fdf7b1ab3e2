//! The two facts the harness reads from a test binary's ELF program headers:
//! whether it is static (only static binaries run in the bare guest) and its
//! GNU build ID (which says whether a case listing recorded at build time
//! still belongs to the binary, wherever it was copied since).
//!
//! Only the file header, the program headers and the PT_NOTE segments are
//! read (through a read cache), never the symbols or debug info of a large
//! test binary.

use object::Endianness;
use object::elf::{ELF_NOTE_GNU, FileHeader64, NT_GNU_BUILD_ID, PT_INTERP, PT_NOTE};
use object::read::ReadCache;
use object::read::elf::{FileHeader, ProgramHeader};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Why a binary's ELF headers could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    /// Not a 64-bit ELF file, or one cut short.
    #[error("{path} is not a 64-bit ELF executable: {source}")]
    Parse { path: PathBuf, source: object::Error },
}

impl From<ElfError> for String {
    fn from(e: ElfError) -> String {
        e.to_string()
    }
}

/// Runs `f` on the file header and program headers of the ELF file at `path`.
fn with_program_headers<T>(
    path: &Path,
    f: impl for<'a> FnOnce(
        Endianness,
        &'a [<FileHeader64<Endianness> as FileHeader>::ProgramHeader],
        &'a ReadCache<File>,
    ) -> object::Result<T>,
) -> Result<T, ElfError> {
    let file = File::open(path).map_err(|source| ElfError::Open {
        path: path.into(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let parse = |cache| -> object::Result<T> {
        let header = FileHeader64::<Endianness>::parse(cache)?;
        let endian = header.endian()?;
        f(endian, header.program_headers(endian, cache)?, cache)
    };
    parse(&cache).map_err(|source| ElfError::Parse {
        path: path.into(),
        source,
    })
}

/// True for a statically linked executable (no PT_INTERP), static-pie included.
pub fn is_static(path: &Path) -> Result<bool, ElfError> {
    with_program_headers(path, |endian, phdrs, _| {
        Ok(!phdrs.iter().any(|p| p.p_type(endian) == PT_INTERP))
    })
}

/// The GNU build ID as hex, or None when the binary has none.
pub fn build_id(path: &Path) -> Result<Option<String>, ElfError> {
    with_program_headers(path, |endian, phdrs, data| {
        for p in phdrs.iter().filter(|p| p.p_type(endian) == PT_NOTE) {
            let Some(mut notes) = p.notes(endian, data)? else {
                continue;
            };
            while let Some(note) = notes.next()? {
                if note.name() == ELF_NOTE_GNU && note.n_type(endian) == NT_GNU_BUILD_ID {
                    return Ok(Some(note.desc().iter().map(|b| format!("{b:02x}")).collect()));
                }
            }
        }
        Ok(None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_the_program_headers() {
        // The test binary itself: dynamic unless built with crt-static.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(is_static(&exe).unwrap(), cfg!(target_feature = "crt-static"));
        assert!(matches!(
            is_static(Path::new("/etc/hostname")),
            Err(ElfError::Parse { .. })
        ));
        assert!(matches!(
            is_static(Path::new("/nonexistent")),
            Err(ElfError::Open { .. })
        ));
    }

    #[test]
    fn rust_binaries_carry_a_build_id() {
        let exe = std::env::current_exe().unwrap();
        let id = build_id(&exe).unwrap().expect("rustc links with --build-id");
        assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
