//! The two facts the harness reads from a test binary's ELF program headers:
//! whether it is static (only static binaries run in the bare guest) and its
//! GNU build ID (which says whether a case listing recorded at build time
//! still belongs to the binary, wherever it was copied since).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const PT_INTERP: u32 = 3;
const PT_NOTE: u32 = 4;
const NT_GNU_BUILD_ID: u32 = 3;

/// One program header: type, file offset, size in the file.
struct Segment {
    kind: u32,
    offset: u64,
    size: u64,
}

/// The program headers of a 64-bit little-endian ELF file (the only kind
/// x86_64 builds produce).
fn segments(path: &Path, f: &mut File) -> Result<Vec<Segment>, String> {
    let mut data = Vec::new();
    f.take(1 << 16)
        .read_to_end(&mut data)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let not_elf = || format!("{} is not a 64-bit little-endian ELF executable", path.display());
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().expect("8 bytes"));
    let phoff = u64_at(32) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            if phentsize < 56 || o + 56 > data.len() {
                return Err(not_elf());
            }
            Ok(Segment {
                kind: u32::from_le_bytes(data[o..o + 4].try_into().expect("4 bytes")),
                offset: u64_at(o + 8),
                size: u64_at(o + 32),
            })
        })
        .collect()
}

/// True for a statically linked executable (no PT_INTERP), static-pie included.
pub fn is_static(path: &Path) -> Result<bool, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(!segments(path, &mut f)?.iter().any(|s| s.kind == PT_INTERP))
}

/// The GNU build ID as hex, or None when the binary has none.
pub fn build_id(path: &Path) -> Result<Option<String>, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for s in segments(path, &mut f)?.into_iter().filter(|s| s.kind == PT_NOTE) {
        let mut notes = vec![0u8; s.size.min(1 << 16) as usize];
        f.seek(SeekFrom::Start(s.offset))
            .and_then(|_| f.read_exact(&mut notes))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(id) = find_build_id(&notes) {
            return Ok(Some(id.iter().map(|b| format!("{b:02x}")).collect()));
        }
    }
    Ok(None)
}

/// Walks the notes of one PT_NOTE segment (4-byte aligned name and descriptor).
fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    let u32_at = |d: &[u8], o: usize| u32::from_le_bytes(d[o..o + 4].try_into().expect("4 bytes")) as usize;
    let align = |n: usize| n.div_ceil(4) * 4;
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (u32_at(notes, 0), u32_at(notes, 4), u32_at(notes, 8));
        let desc_at = 12 + align(namesz);
        let end = desc_at + align(descsz);
        if desc_at + descsz > notes.len() {
            return None;
        }
        if kind as u32 == NT_GNU_BUILD_ID && notes[12..12 + namesz] == *b"GNU\0" {
            return Some(&notes[desc_at..desc_at + descsz]);
        }
        notes = notes.get(end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check_reads_the_program_headers() {
        // The test binary itself: dynamic unless built with crt-static.
        let exe = std::env::current_exe().unwrap();
        assert_eq!(is_static(&exe).unwrap(), cfg!(target_feature = "crt-static"));
        assert!(is_static(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn build_id_is_the_gnu_note() {
        let mut notes = Vec::new();
        // An unrelated note first, with a name that needs padding.
        notes.extend([5u32, 4, 1].iter().flat_map(|v| v.to_le_bytes()));
        notes.extend(b"Linux\0\0\0");
        notes.extend([0u8; 4]);
        notes.extend([4u32, 3, NT_GNU_BUILD_ID].iter().flat_map(|v| v.to_le_bytes()));
        notes.extend(b"GNU\0");
        notes.extend([0xab, 0xcd, 0xef, 0]);
        assert_eq!(find_build_id(&notes), Some(&[0xab, 0xcd, 0xef][..]));
        assert_eq!(find_build_id(&notes[..20]), None);
    }

    #[test]
    fn rust_binaries_carry_a_build_id() {
        let exe = std::env::current_exe().unwrap();
        let id = build_id(&exe).unwrap().expect("rustc links with --build-id");
        assert!(id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
}
