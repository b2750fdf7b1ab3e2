//! Turns a kernel and an initramfs into a QEMU command line, one small
//! function per concern, and picks the accelerator.

use super::VmError;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The QEMU binary the harness drives.
pub const QEMU: &str = "qemu-system-x86_64";

/// How the guest's CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// What the user asked for with `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where it can run a standard guest, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// Everything one boot needs.
#[derive(Debug, Clone)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    pub cpus: u32,
    /// The host file QEMU writes the guest's second serial port (KTAP) to.
    pub ktap_file: PathBuf,
    /// Appended after the harness's own kernel parameters.
    pub extra_cmdline: Vec<String>,
}

/// The kernel parameters, each with why it is there.
pub fn kernel_params(b: &Boot) -> Vec<(String, &'static str)> {
    let mut p: Vec<(String, &'static str)> = vec![
        (
            "console=ttyS0".into(),
            "kernel log on the first serial port, which the host parses for splats",
        ),
        (
            "panic=-1".into(),
            "reboot at once on panic; with -no-reboot that ends QEMU instead of hanging",
        ),
        (
            "oops=panic".into(),
            "an oops ends the run rather than leaving a half-dead guest",
        ),
        (
            "rdinit=/init".into(),
            "run the harness from the initramfs; there is no root disk",
        ),
        (
            "mitigations=off".into(),
            "speculation barriers cost much under TCG; nothing to protect in a test guest",
        ),
        ("random.trust_cpu=on".into(), "no wait for entropy at boot"),
        (
            "no_timer_check".into(),
            "a slow TCG guest can fail the IO-APIC timer check and panic before init",
        ),
        (
            "8250.nr_uarts=2".into(),
            "only ttyS0 (console) and ttyS1 (KTAP) exist; skip probing the others",
        ),
        (
            "init_on_alloc=0".into(),
            "pages reach user space zeroed anyway; zeroing every allocation as well (a distro \
             default) made reserving the huge pages take 0.6 s of the guest's start under TCG",
        ),
    ];
    let gigantic = gigantic_pages(b.memory_mib);
    if gigantic > 0 {
        p.push((
            format!("hugepagesz=1G hugepages={gigantic}"),
            "1 GiB huge pages for the 1 GiB hugetlb cases (they skip without): asked at boot, \
             where the top of each node (NODE_DATA, the initrd) can spoil every aligned GiB, \
             so the init tops the count up at run time before anything else allocates",
        ));
    }
    if b.accel == Accel::Tcg {
        p.push((
            EMULATED_PARAM.into(),
            "the guest's CPUs are emulated: `--under-load` runs its load at a rate TCG can carry",
        ));
    }
    p.extend(b.extra_cmdline.iter().map(|s| (s.clone(), "from --append")));
    p
}

/// On the command line of a TCG guest. A module-style name, so the kernel
/// neither warns about it nor hands it to init; the init reads /proc/cmdline.
pub const EMULATED_PARAM: &str = "uffdtest.emulated";

/// Guest memory kept for everything but 1 GiB huge pages. Not only what the
/// kernel, the 2 MiB pool, zram and the cases use: QEMU's pc machine puts
/// 3 GiB below 4 GiB (the last of it under a BIOS hole, the initrd at its
/// top) and the rest above, and each node keeps its memmap and NODE_DATA at
/// its top, so with 4 GiB no aligned GiB was free (seen on Debian 6.12,
/// at boot and at run time). From 6 GiB on, node 1 is [4 GiB, 7 GiB) and
/// has clean GiBs below its top.
const MIB_BESIDES_GIGANTIC: u32 = 5120;

/// 1 GiB huge pages to reserve at boot in a guest of `memory_mib`: what is
/// left over [`MIB_BESIDES_GIGANTIC`], whole GiBs, at most 2. The default
/// 6144 MiB gives one.
pub fn gigantic_pages(memory_mib: u32) -> u32 {
    (memory_mib.saturating_sub(MIB_BESIDES_GIGANTIC) / 1024).min(2)
}

/// How many NUMA nodes the guest gets: two, so migration between nodes
/// (move_pages(2), mbind) has somewhere to go.
pub const NUMA_NODES: u32 = 2;

/// `-object memory-backend-ram` and `-numa node` per node: the memory split
/// evenly (the first node takes the odd MiB), every CPU on node 0 and the
/// others memory-only. QEMU's `-smp N` makes N cores of one socket, which
/// share a cache: dealing them over nodes makes the kernel WARN at boot
/// (topology_sane: "llc-sibling ... is not on the same node").
/// `merge=off`: QEMU marks guest RAM mergeable by default, and the host's
/// ksmd would then scan gigabytes of it in every pass, so KSM cases run on
/// the host beside a guest wait many times longer for their pages.
fn numa_args(b: &Boot) -> Vec<String> {
    let mut out = Vec::new();
    let per = b.memory_mib / NUMA_NODES;
    for n in 0..NUMA_NODES {
        let mib = if n == 0 {
            b.memory_mib - per * (NUMA_NODES - 1)
        } else {
            per
        };
        out.push("-object".into());
        out.push(format!("memory-backend-ram,id=mem{n},size={mib}M,merge=off"));
        let mut node = format!("node,nodeid={n},memdev=mem{n}");
        if n == 0 && b.cpus > 0 {
            node += &format!(",cpus=0-{}", b.cpus - 1);
        }
        out.push("-numa".into());
        out.push(node);
    }
    out
}

/// `-accel` and `-cpu`: the host's CPU under KVM; under TCG `max`, so the
/// guest sees every feature QEMU can emulate (PKU and the like), but
/// without 5-level paging: the machines the suite gates for have a 47-bit
/// user address space, and the range-limit cases expect it.
fn accel_args(a: Accel) -> Vec<String> {
    match a {
        Accel::Kvm => vec!["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()],
        Accel::Tcg => vec![
            "-accel".into(),
            "tcg,thread=multi".into(),
            "-cpu".into(),
            "max,la57=off".into(),
        ],
    }
}

/// `-m` and `-smp`.
fn machine_args(b: &Boot) -> Vec<String> {
    vec![
        "-m".into(),
        format!("{}M", b.memory_mib),
        "-smp".into(),
        b.cpus.to_string(),
    ]
}

/// No display, and a crash or poweroff ends QEMU: `-no-reboot` turns the
/// reboot `panic=-1` asks for into an exit.
fn lifecycle_args() -> Vec<String> {
    ["-nographic", "-no-reboot", "-nodefaults"].map(String::from).to_vec()
}

/// ttyS0 (kernel console) on QEMU's stdout, ttyS1 (KTAP) into a file the
/// host follows, so the two streams never interleave.
fn serial_args(b: &Boot) -> Vec<String> {
    vec![
        "-chardev".into(),
        "stdio,id=console,signal=off".into(),
        "-serial".into(),
        "chardev:console".into(),
        "-serial".into(),
        format!("file:{}", b.ktap_file.display()),
    ]
}

fn kernel_args(b: &Boot) -> Vec<String> {
    let cmdline: Vec<String> = kernel_params(b).into_iter().map(|(p, _)| p).collect();
    vec![
        "-kernel".into(),
        b.kernel.display().to_string(),
        "-initrd".into(),
        b.initrd.display().to_string(),
        "-append".into(),
        cmdline.join(" "),
    ]
}

/// The whole argument list for [`QEMU`].
pub fn qemu_args(b: &Boot) -> Vec<String> {
    [
        accel_args(b.accel),
        machine_args(b),
        numa_args(b),
        lifecycle_args(),
        serial_args(b),
        kernel_args(b),
    ]
    .concat()
}

/// Finds QEMU on PATH; the error says which package brings it.
pub fn find_qemu() -> Result<PathBuf, VmError> {
    which(QEMU).ok_or(VmError::NoQemu)
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// A kernel to boot: the image, and the build tree's `.config` if known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub image: PathBuf,
    pub config: Option<PathBuf>,
}

/// Why a path is no kernel to boot.
#[derive(Debug)]
pub enum KernelError {
    /// A directory, but not a built kernel tree.
    NoImageInTree(PathBuf),
    Open(PathBuf, std::io::Error),
    Read(PathBuf, std::io::Error),
    /// An ELF file: vmlinux rather than the bootable image.
    Elf(PathBuf),
    /// No x86 boot protocol header.
    NotBootable(PathBuf),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::NoImageInTree(p) => write!(
                f,
                "{} is a directory without arch/x86/boot/bzImage; build the kernel (make bzImage) or pass the image",
                p.display()
            ),
            KernelError::Open(p, e) => write!(f, "cannot open kernel {}: {e}", p.display()),
            KernelError::Read(p, e) => write!(f, "cannot read kernel {}: {e}", p.display()),
            KernelError::Elf(p) => write!(
                f,
                "{} is an ELF file (vmlinux?), not a bootable image; pass arch/x86/boot/bzImage or the build tree",
                p.display()
            ),
            KernelError::NotBootable(p) => write!(
                f,
                "{} is not a bootable x86 kernel (no \"HdrS\" boot header at 0x202); pass a bzImage or vmlinuz",
                p.display()
            ),
        }
    }
}

impl std::error::Error for KernelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KernelError::Open(_, e) | KernelError::Read(_, e) => Some(e),
            _ => None,
        }
    }
}

/// Accepts a bzImage, or a kernel build tree holding
/// `arch/x86/boot/bzImage`; checks it carries the x86 boot header.
pub fn resolve_kernel(path: &Path) -> Result<Kernel, KernelError> {
    let (image, config) = if path.is_dir() {
        let image = path.join("arch/x86/boot/bzImage");
        if !image.is_file() {
            return Err(KernelError::NoImageInTree(path.to_path_buf()));
        }
        let config = Some(path.join(".config")).filter(|c| c.is_file());
        (image, config)
    } else {
        (path.to_path_buf(), None)
    };
    check_bzimage(&image)?;
    Ok(Kernel { image, config })
}

/// The x86 boot protocol's `HdrS` magic at 0x202 (Documentation/arch/x86/boot.rst).
pub fn check_bzimage(path: &Path) -> Result<(), KernelError> {
    let mut f = File::open(path).map_err(|e| KernelError::Open(path.to_path_buf(), e))?;
    let mut head = [0u8; 0x206];
    let n = f
        .read(&mut head)
        .map_err(|e| KernelError::Read(path.to_path_buf(), e))?;
    if n >= 4 && &head[..4] == b"\x7fELF" {
        return Err(KernelError::Elf(path.to_path_buf()));
    }
    if n < head.len() || &head[0x202..0x206] != b"HdrS" {
        return Err(KernelError::NotBootable(path.to_path_buf()));
    }
    Ok(())
}

/// Whether KVM is worth trying at all: `/dev/kvm` opens read-write.
/// Whether it can run a standard guest is only known by booting one (see
/// [`kvm_failed`]); the caller remembers the answer for the run.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// QEMU's stderr lines that mean KVM cannot run this guest: it stops the VM
/// and waits forever, so the host must notice and fall back.
pub fn kvm_failed(stderr_line: &str) -> bool {
    stderr_line.contains("KVM internal error")
        || stderr_line.contains("emulation failure")
        || stderr_line.contains("failed to initialize kvm")
        || stderr_line.contains("failed to initialize KVM")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        Boot {
            kernel: "/k/bzImage".into(),
            initrd: "/t/initrd".into(),
            accel: Accel::Tcg,
            memory_mib: 2048,
            cpus: 2,
            ktap_file: "/t/ktap".into(),
            extra_cmdline: vec!["nokaslr".into()],
        }
    }

    /// Each of `wants` stands in `b`'s QEMU command line.
    #[track_caller]
    fn assert_args(b: &Boot, wants: &[&str]) {
        let args = qemu_args(b).join(" ");
        for want in wants {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
    }

    #[test]
    fn command_line_boots_the_kernel_with_both_serial_ports() {
        assert_args(
            &boot(),
            &[
                "-accel tcg,thread=multi -cpu max,la57=off",
                "-m 2048M -smp 2",
                "-nographic -no-reboot",
                "-serial chardev:console -serial file:/t/ktap",
                "-kernel /k/bzImage -initrd /t/initrd",
            ],
        );
        let append = qemu_args(&boot()).last().unwrap().clone();
        assert!(append.starts_with("console=ttyS0 panic=-1 oops=panic"), "{append}");
        assert!(append.ends_with(" nokaslr"), "{append}");
    }

    #[test]
    fn two_numa_nodes_split_memory_with_every_cpu_on_the_first() {
        assert_args(
            &boot(),
            &[
                "-object memory-backend-ram,id=mem0,size=1024M,merge=off -numa node,nodeid=0,memdev=mem0,cpus=0-1 ",
                "-object memory-backend-ram,id=mem1,size=1024M,merge=off -numa node,nodeid=1,memdev=mem1 ",
            ],
        );
        let odd = Boot {
            memory_mib: 3001,
            cpus: 1,
            ..boot()
        };
        assert_args(
            &odd,
            &[
                "id=mem0,size=1501M,merge=off -numa node,nodeid=0,memdev=mem0,cpus=0-0 ",
                "id=mem1,size=1500M,merge=off -numa node,nodeid=1,memdev=mem1 ",
            ],
        );
    }

    #[test]
    fn gigantic_pages_only_where_memory_allows() {
        assert_eq!(gigantic_pages(2048), 0);
        assert_eq!(gigantic_pages(6143), 0);
        assert_eq!(gigantic_pages(6144), 1);
        assert_eq!(gigantic_pages(8192), 2);
        let b = Boot {
            memory_mib: 6144,
            ..boot()
        };
        let append = qemu_args(&b).last().unwrap().clone();
        assert!(append.contains(" hugepagesz=1G hugepages=1 "), "{append}");
        assert!(!qemu_args(&boot()).last().unwrap().contains("hugepagesz"));
    }

    #[test]
    fn every_kernel_parameter_says_why() {
        assert!(kernel_params(&boot()).iter().all(|(_, why)| !why.is_empty()));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let b = Boot {
            accel: Accel::Kvm,
            ..boot()
        };
        assert!(qemu_args(&b).join(" ").contains("-accel kvm -cpu host"));
    }

    #[test]
    fn kernel_checks_name_the_problem() {
        let dir = std::env::temp_dir().join(format!("uffdtest-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = |p: &Path| resolve_kernel(p).unwrap_err().to_string();
        let missing = err(&dir.join("nope"));
        assert!(missing.contains("cannot open kernel"), "{missing}");
        let elf = err(&std::env::current_exe().unwrap());
        assert!(elf.contains("ELF"), "{elf}");
        std::fs::write(dir.join("text"), "not a kernel").unwrap();
        assert!(err(&dir.join("text")).contains("HdrS"));
        assert!(err(&dir).contains("arch/x86/boot/bzImage"));
        let mut fake = vec![0u8; 0x400];
        fake[0x202..0x206].copy_from_slice(b"HdrS");
        std::fs::create_dir_all(dir.join("arch/x86/boot")).unwrap();
        std::fs::write(dir.join("arch/x86/boot/bzImage"), &fake).unwrap();
        std::fs::write(dir.join(".config"), "CONFIG_USERFAULTFD=y\n").unwrap();
        assert_eq!(
            resolve_kernel(&dir).unwrap(),
            Kernel {
                image: dir.join("arch/x86/boot/bzImage"),
                config: Some(dir.join(".config"))
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kvm_emulation_failure_is_recognised() {
        assert!(kvm_failed("KVM internal error. Suberror: 1"));
        assert!(kvm_failed("emulation failure"));
        assert!(!kvm_failed(
            "qemu-system-x86_64: warning: host doesn't support requested feature"
        ));
    }
}
