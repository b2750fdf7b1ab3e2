//! Packs the guest's whole userspace into one newc cpio: the static
//! `uffdtest` as `/init`, the static test binaries, their manifest and the
//! guest's orders. No busybox, no host root filesystem.

use super::VmError;
use crate::runner::discover::{Binary, MANIFEST_NAME, Manifest};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Where the guest init finds its orders ([`crate::vm::init::GuestConfig`]).
pub const GUEST_CONFIG: &str = "etc/uffdtest-guest.json";
/// Where the test binaries go, and the manifest that lists them.
pub const TESTS_DIR: &str = "tests";

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The static `uffdtest` binary, installed as `/init`.
    pub init: PathBuf,
    /// The test binaries (absolute host paths).
    pub tests: Manifest,
    /// The guest's orders, serialised as JSON.
    pub guest_config: String,
}

/// A newc archive being written. Entries must come parents first.
pub struct Archive<W: Write> {
    out: Option<W>,
    ino: u32,
}

/// `S_IF*` file types, as the newc mode field carries them.
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> Archive<W> {
    pub fn new(out: W) -> Self {
        Archive { out: Some(out), ino: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32) -> cpio::NewcBuilder {
        self.ino += 1;
        cpio::NewcBuilder::new(name).ino(self.ino).mode(mode).nlink(1)
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        let b = self.entry(name, S_IFDIR | 0o755).nlink(2);
        let out = self.out.take().expect("archive open");
        self.out = Some(b.write(out, 0).finish()?);
        Ok(())
    }

    /// A character device node: the kernel opens `/dev/console` for init's
    /// stdio before any devtmpfs exists.
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        let b = self.entry(name, S_IFCHR | 0o600).rdev_major(major).rdev_minor(minor);
        let out = self.out.take().expect("archive open");
        self.out = Some(b.write(out, 0).finish()?);
        Ok(())
    }

    pub fn bytes(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.file(name, mode, data.len() as u64, &mut &data[..])
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file(&mut self, name: &str, mode: u32, size: u64, data: &mut dyn Read) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: over 4 GiB, newc cannot hold it"),
            )
        })?;
        let b = self.entry(name, S_IFREG | mode);
        let out = self.out.take().expect("archive open");
        let mut w = b.write(out, size32);
        let copied = io::copy(&mut data.take(size), &mut w)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: file shrank while packing"),
            ));
        }
        self.out = Some(w.finish()?);
        Ok(())
    }

    pub fn host_file(&mut self, name: &str, mode: u32, path: &Path) -> io::Result<()> {
        let mut f = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let size = f.metadata()?.len();
        self.file(name, mode, size, &mut f)
    }

    pub fn finish(mut self) -> io::Result<W> {
        cpio::newc::trailer(self.out.take().expect("archive open"))
    }
}

/// Writes the initramfs to `path`.
pub fn write(path: &Path, c: &Contents) -> Result<(), VmError> {
    let f = File::create(path).map_err(VmError::io(format!("cannot create the initramfs {}", path.display())))?;
    pack(BufWriter::new(f), c)
        .and_then(|mut w| w.flush())
        .map_err(VmError::io(format!("writing the initramfs {}", path.display())))
}

/// The archive's layout: `/init`, `/dev/console`, the mount points,
/// `/tests/<name>`, `/tests/uffdtest-tests.json`, `/etc/uffdtest-guest.json`.
pub fn pack<W: Write>(out: W, c: &Contents) -> io::Result<W> {
    let mut a = Archive::new(out);
    for d in ["dev", "proc", "sys", "tmp", "etc", "mnt", "mnt/huge", TESTS_DIR] {
        a.dir(d)?;
    }
    a.char_dev("dev/console", 5, 1)?;
    a.host_file("init", 0o755, &c.init)?;
    let mut guest = Manifest::default();
    for b in &c.tests.binaries {
        let name = format!("{TESTS_DIR}/{}", b.name);
        a.host_file(&name, 0o755, &b.path)?;
        guest.binaries.push(Binary {
            path: PathBuf::from(&b.name),
            ..b.clone()
        });
    }
    let manifest = serde_json::to_string_pretty(&guest).expect("manifest serialises");
    a.bytes(&format!("{TESTS_DIR}/{MANIFEST_NAME}"), 0o644, manifest.as_bytes())?;
    a.bytes(GUEST_CONFIG, 0o644, c.guest_config.as_bytes())?;
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads an archive back with the crate's reader: names, modes, sizes.
    fn entries(mut data: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let mut r = cpio::NewcReader::new(data).unwrap();
            if r.entry().is_trailer() {
                return out;
            }
            let (name, mode) = (r.entry().name().to_string(), r.entry().mode());
            let mut body = Vec::new();
            r.read_to_end(&mut body).unwrap();
            out.push((name, mode, body));
            data = r.finish().unwrap();
        }
    }

    #[test]
    fn archive_round_trips_dirs_devices_and_files() {
        let mut a = Archive::new(Vec::new());
        a.dir("dev").unwrap();
        a.char_dev("dev/console", 5, 1).unwrap();
        a.bytes("init", 0o755, b"odd-length").unwrap();
        a.bytes("etc", 0o644, b"").unwrap();
        let data = a.finish().unwrap();
        assert_eq!(data.len() % 4, 0, "newc pads every entry to 4 bytes");
        let got = entries(&data);
        assert_eq!(
            got,
            [
                ("dev".into(), 0o040755, vec![]),
                ("dev/console".into(), 0o020600, vec![]),
                ("init".into(), 0o100755, b"odd-length".to_vec()),
                ("etc".into(), 0o100644, vec![]),
            ]
        );
    }

    #[test]
    fn layout_puts_tests_under_tests_with_relative_manifest() {
        let exe = std::env::current_exe().unwrap();
        let c = Contents {
            init: exe.clone(),
            tests: Manifest {
                binaries: vec![Binary {
                    name: "api".into(),
                    path: exe.clone(),
                    serial: vec![],
                    listing: None,
                }],
            },
            guest_config: "{}".into(),
        };
        let data = pack(Vec::new(), &c).unwrap();
        let got = entries(&data);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        for n in [
            "init",
            "dev/console",
            "proc",
            "sys",
            "tests/api",
            "tests/uffdtest-tests.json",
            GUEST_CONFIG,
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let init = got.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.2.len() as u64, std::fs::metadata(&exe).unwrap().len());
        let m = &got.iter().find(|e| e.0 == "tests/uffdtest-tests.json").unwrap().2;
        let m: Manifest = serde_json::from_slice(m).unwrap();
        assert_eq!(m.binaries[0].path, PathBuf::from("api"));
    }
}
