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
/// Where the kernel modules the init loads go, `NN-name.ko` in load order.
pub const MODULES_DIR: &str = "modules";

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The static `uffdtest` binary, installed as `/init`.
    pub init: PathBuf,
    /// The test binaries (absolute host paths).
    pub tests: Manifest,
    /// The guest's orders, serialised as JSON.
    pub guest_config: String,
    /// Kernel modules for the init to load, in load order ([`swap_modules`]).
    pub modules: Vec<Module>,
}

/// One kernel module, uncompressed, as init_module(2) takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// As the kernel names it (`-` read as `_`): `zram`, `zsmalloc`.
    pub name: String,
    pub image: Vec<u8>,
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
    for d in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc",
        "mnt",
        "mnt/huge",
        TESTS_DIR,
        MODULES_DIR,
    ] {
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
    for (i, m) in c.modules.iter().enumerate() {
        a.bytes(&format!("{MODULES_DIR}/{i:02}-{}.ko", m.name), 0o644, &m.image)?;
    }
    a.finish()
}

/// The kernel release an x86 bzImage names in its setup header
/// (`kernel_version` at 0x20E points at the string, 0x200 bytes on;
/// Documentation/arch/x86/boot.rst): `6.12.118+deb12-cloud-amd64`.
pub fn kernel_release(image: &Path) -> Option<String> {
    let mut f = File::open(image).ok()?;
    let mut head = vec![0u8; 0x10000];
    let n = f.read(&mut head).ok()?;
    head.truncate(n);
    let off = u16::from_le_bytes([*head.get(0x20E)?, *head.get(0x20F)?]) as usize + 0x200;
    let s = head.get(off..)?;
    let end = s.iter().position(|&b| b == 0 || b == b' ')?;
    let r = std::str::from_utf8(&s[..end]).ok()?;
    (!r.is_empty()).then(|| r.to_string())
}

/// The swap device the guest gets: zram, built in or loaded from modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestSwap {
    /// zram is built in (or the config is unknown): nothing to load.
    BuiltIn,
    /// These modules, in load order, bring zram and its compressor.
    Modules(Vec<Module>),
}

/// Why the guest gets no swap device (its swap cases then skip).
#[derive(Debug, thiserror::Error)]
pub enum NoSwap {
    /// The kernel's config lacks this option.
    #[error("the kernel has no {0}")]
    NotConfigured(&'static str),
    #[error("cannot read the kernel release from the image")]
    NoRelease,
    /// zram is a module, and none was found in these directories.
    #[error(
        "CONFIG_ZRAM=m, and no zram module for {release} was found (looked in: {})",
        looked_in(looked)
    )]
    NoZramModule { release: String, looked: Vec<PathBuf> },
    /// A module zram depends on is not beside it.
    #[error("module {0} (a dependency of zram) not found")]
    NoDependency(String),
    #[error("{path}: {err}")]
    Read { path: PathBuf, err: io::Error },
    /// The tool that unpacks a compressed module could not be run.
    #[error("cannot run {tool} to unpack {path}: {err}")]
    Unpack {
        path: PathBuf,
        tool: &'static str,
        err: io::Error,
    },
    #[error("{tool} -dc {path}: {status}")]
    UnpackFailed {
        path: PathBuf,
        tool: &'static str,
        status: std::process::ExitStatus,
    },
}

fn looked_in(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no <image dir>/../lib/modules/<release> nor /lib/modules/<release>".into();
    }
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(", ")
}

/// Where `kernel`'s modules are: its build tree, `<image dir>/../lib/modules/<release>`
/// (a Debian package unpacked with `dpkg-deb -x`), or `/lib/modules/<release>`.
fn modules_dirs(image: &Path, tree: Option<&Path>, release: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = tree.map(Path::to_path_buf).into_iter().collect();
    if let Some(dir) = image.parent() {
        v.push(dir.join("..").join("lib/modules").join(release));
    }
    v.push(Path::new("/lib/modules").join(release));
    v.into_iter().filter(|d| d.is_dir()).collect()
}

/// The config beside the kernel: the build tree's `.config`, or
/// `config-<release>` next to the image (as /boot and Debian's packages have it).
fn kernel_config(image: &Path, config: Option<&Path>, release: Option<&str>) -> Option<String> {
    let p = config
        .map(Path::to_path_buf)
        .or_else(|| Some(image.parent()?.join(format!("config-{}", release?))))?;
    std::fs::read_to_string(p).ok()
}

/// What the guest needs for a swap device (zram, which writes synchronously,
/// so a paged-out page leaves the swap cache at once): nothing if zram is
/// built in, else zram's module with its dependencies and the compressor
/// its default algorithm names, from the kernel's own modules. Err says why
/// the guest gets no swap (its swap cases then skip).
pub fn swap_modules(image: &Path, tree: Option<&Path>, config: Option<&Path>) -> Result<GuestSwap, NoSwap> {
    let release = kernel_release(image);
    let cfg = kernel_config(image, config, release.as_deref()).map(|t| super::kconfig::parse_config(&t));
    let opt = |k: &str| cfg.as_ref().and_then(|c| c.get(k).cloned());
    if cfg.is_some() {
        if opt("CONFIG_SWAP").as_deref() != Some("y") {
            return Err(NoSwap::NotConfigured("CONFIG_SWAP"));
        }
        match opt("CONFIG_ZRAM").as_deref() {
            Some("y") => return Ok(GuestSwap::BuiltIn),
            Some("m") => {}
            _ => return Err(NoSwap::NotConfigured("CONFIG_ZRAM")),
        }
    }
    let release = release.ok_or(NoSwap::NoRelease)?;
    let dirs = modules_dirs(image, tree, &release);
    let index =
        dirs.iter()
            .flat_map(|d| index_modules(d))
            .fold(std::collections::HashMap::new(), |mut m, (name, path)| {
                m.entry(name).or_insert(path);
                m
            });
    if !index.contains_key("zram") {
        if cfg.is_none() {
            return Ok(GuestSwap::BuiltIn);
        }
        return Err(NoSwap::NoZramModule { release, looked: dirs });
    }
    let mut order = Vec::new();
    let mut seen = std::collections::HashSet::new();
    add_with_deps("zram", &index, &mut seen, &mut order)?;
    // zram allocates its compressor by name; through the crypto API (6.1) a
    // modular algorithm is only found if loaded first (no modprobe in the guest).
    if let Some(alg) = opt("CONFIG_ZRAM_DEF_COMP") {
        let alg = alg.trim_matches('"');
        let alias = format!("alias=crypto-{alg}");
        let provides = |p: &PathBuf| read_module(p).is_ok_and(|img| modinfo(&img).contains(&alias.as_str()));
        // The module named like the algorithm (`lzo` for lzo-rle) first;
        // else any crypto module: unpacking every module would take long.
        let by_name = [alg.replace('-', "_"), alg.split('-').next().unwrap_or(alg).to_string()]
            .into_iter()
            .find(|n| index.get(n).is_some_and(provides));
        let provider = by_name.or_else(|| {
            index
                .iter()
                .filter(|(_, p)| p.components().any(|c| c.as_os_str() == "crypto"))
                .find(|(_, p)| provides(p))
                .map(|(n, _)| n.clone())
        });
        if let Some(name) = provider {
            add_with_deps(&name, &index, &mut seen, &mut order)?;
        }
    }
    Ok(GuestSwap::Modules(order))
}

/// Every `*.ko[.xz|.zst|.gz]` under `dir`, by module name.
fn index_modules(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str()).and_then(module_name) {
                out.push((name, p));
            }
        }
    }
    out
}

/// `zram.ko.xz` → `zram`; `lz4_compress.ko` → `lz4_compress`; else None.
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

/// The module's bytes, decompressed with the tool its suffix names.
fn read_module(path: &Path) -> Result<Vec<u8>, NoSwap> {
    let name = path.to_string_lossy();
    let tool = [(".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")]
        .iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, t)| *t);
    match tool {
        None => std::fs::read(path).map_err(|err| NoSwap::Read {
            path: path.to_path_buf(),
            err,
        }),
        Some(t) => {
            let out = std::process::Command::new(t)
                .arg("-dc")
                .arg(path)
                .output()
                .map_err(|err| NoSwap::Unpack {
                    path: path.to_path_buf(),
                    tool: t,
                    err,
                })?;
            if !out.status.success() {
                return Err(NoSwap::UnpackFailed {
                    path: path.to_path_buf(),
                    tool: t,
                    status: out.status,
                });
            }
            Ok(out.stdout)
        }
    }
}

/// The `key=value` strings of a module's `.modinfo` (found by scanning:
/// they are NUL-separated, and the keys we read occur nowhere else).
fn modinfo(image: &[u8]) -> Vec<&str> {
    image
        .split(|&b| b == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter(|s| s.starts_with("depends=") || s.starts_with("alias=") || s.starts_with("name="))
        .collect()
}

/// Appends `name`'s dependencies (its modinfo `depends=`), then `name`.
fn add_with_deps(
    name: &str,
    index: &std::collections::HashMap<String, PathBuf>,
    seen: &mut std::collections::HashSet<String>,
    order: &mut Vec<Module>,
) -> Result<(), NoSwap> {
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let path = index.get(name).ok_or_else(|| NoSwap::NoDependency(name.to_string()))?;
    let image = read_module(path)?;
    let deps: Vec<String> = modinfo(&image)
        .iter()
        .filter_map(|s| s.strip_prefix("depends="))
        .flat_map(|d| d.split(','))
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect();
    for d in deps {
        add_with_deps(&d, index, seen, order)?;
    }
    order.push(Module {
        name: name.to_string(),
        image,
    });
    Ok(())
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
                    keys: Default::default(),
                    listing: None,
                }],
            },
            guest_config: "{}".into(),
            modules: vec![Module {
                name: "zram".into(),
                image: b"\x7fELF".to_vec(),
            }],
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
            "modules/00-zram.ko",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        let init = got.iter().find(|e| e.0 == "init").unwrap();
        assert_eq!(init.2.len() as u64, std::fs::metadata(&exe).unwrap().len());
        let m = &got.iter().find(|e| e.0 == "tests/uffdtest-tests.json").unwrap().2;
        let m: Manifest = serde_json::from_slice(m).unwrap();
        assert_eq!(m.binaries[0].path, PathBuf::from("api"));
    }

    #[test]
    fn module_names_drop_the_suffix_and_read_dashes_as_underscores() {
        assert_eq!(module_name("zram.ko.xz").as_deref(), Some("zram"));
        assert_eq!(module_name("lz4-compress.ko").as_deref(), Some("lz4_compress"));
        assert_eq!(module_name("zram.ko.zst").as_deref(), Some("zram"));
        assert_eq!(module_name("modules.order"), None);
    }

    #[test]
    fn modinfo_strings_are_found_between_nuls() {
        let img = b"\x7fELF\0junk\0depends=zsmalloc,lz4_compress\0alias=crypto-lzo-rle\0name=zram\0";
        assert_eq!(
            modinfo(img),
            ["depends=zsmalloc,lz4_compress", "alias=crypto-lzo-rle", "name=zram"]
        );
    }

    #[test]
    fn kernel_release_comes_from_the_setup_header() {
        let mut img = vec![0u8; 0x400];
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x300 + 9].copy_from_slice(b"6.12.1 #1");
        let p = std::env::temp_dir().join(format!("uffdtest-krel-{}", std::process::id()));
        std::fs::write(&p, &img).unwrap();
        assert_eq!(kernel_release(&p).as_deref(), Some("6.12.1"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn a_kernel_without_zram_or_swap_says_so() {
        let dir = std::env::temp_dir().join(format!("uffdtest-swapmods-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let image = dir.join("vmlinuz-9.9.9");
        let mut img = vec![0u8; 0x400];
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x306].copy_from_slice(b"9.9.9 ");
        std::fs::write(&image, &img).unwrap();
        let cfg = dir.join("config-9.9.9");
        std::fs::write(&cfg, "CONFIG_SWAP=y\n# CONFIG_ZRAM is not set\n").unwrap();
        let why = |image: &Path| swap_modules(image, None, None).unwrap_err().to_string();
        assert_eq!(why(&image), "the kernel has no CONFIG_ZRAM");
        std::fs::write(&cfg, "CONFIG_ZRAM=y\n").unwrap();
        assert_eq!(why(&image), "the kernel has no CONFIG_SWAP");
        std::fs::write(&cfg, "CONFIG_SWAP=y\nCONFIG_ZRAM=y\n").unwrap();
        assert_eq!(swap_modules(&image, None, None).ok(), Some(GuestSwap::BuiltIn));
        std::fs::write(&cfg, "CONFIG_SWAP=y\nCONFIG_ZRAM=m\n").unwrap();
        let e = why(&image);
        assert!(e.contains("no zram module for 9.9.9"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
