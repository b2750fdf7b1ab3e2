//! What the running kernel can do, probed once per run ([`cache`]).
//!
//! Tests gate on these facts (UFFDIO_API bits, registration answers, free
//! huge pages, privilege), never on a kernel version: distro kernels backport.

use crate::mem::guest_memfd::Unusable;
use crate::mem::{self, Area, MemType};
use crate::uffd::{Features, Ioctls, OpenError, OpenFlags, RegisterMode, Uffd};
use nix::errno::Errno;
use serde::Serialize;
use std::sync::LazyLock;

mod cache;
mod mm;
pub use cache::RUN_DIR_ENV;
pub use mm::*;

/// The outcome of registering one page of a memory type in one mode.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// The kernel granted these range ioctls.
    Granted(#[serde(serialize_with = "ser_ioctls")] Ioctls),
    /// REGISTER failed with this errno.
    Refused(#[serde(serialize_with = "ser_errno")] Errno),
    /// The probe could not make the memory (reason).
    Unprobed(String),
}

fn ser_ioctls<S: serde::Serializer>(i: &Ioctls, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ioctl_names(*i).join("|"))
}

fn ser_errno<S: serde::Serializer>(e: &Errno, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{e:?}"))
}

/// A probe's outcome as JSON: `{"Ok": null}` or `{"Err": "<the reason as printed>"}`.
fn ser_outcome<S: serde::Serializer, E: std::fmt::Display>(r: &Result<(), E>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Ok(()) => s.serialize_newtype_variant("Result", 0, "Ok", &()),
        Err(e) => s.serialize_newtype_variant("Result", 1, "Err", &e.to_string()),
    }
}

fn ser_features<S: serde::Serializer>(f: &Features, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(feature_names(*f))
}

fn ser_opt_features<S: serde::Serializer>(f: &Option<Features>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Some(f) => ser_features(f, s),
        None => s.serialize_none(),
    }
}

/// `UFFD_FEATURE_*` names of the bits set in `f`.
pub fn feature_names(f: Features) -> Vec<String> {
    f.iter_names().map(|(n, _)| format!("UFFD_FEATURE_{n}")).collect()
}

/// `UFFDIO_*` names of the bits set in `i`.
pub fn ioctl_names(i: Ioctls) -> Vec<String> {
    i.iter_names().map(|(n, _)| n.to_string()).collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Caps {
    pub release: String,
    pub root: bool,
    /// userfaultfd(2) with UFFD_USER_MODE_ONLY: Ok or the failing step.
    #[serde(serialize_with = "ser_outcome")]
    pub syscall: Result<(), OpenError>,
    /// userfaultfd(2) without UFFD_USER_MODE_ONLY (needs CAP_SYS_PTRACE or
    /// `vm.unprivileged_userfaultfd=1`): Ok or the failing step.
    #[serde(serialize_with = "ser_outcome")]
    pub syscall_full: Result<(), OpenError>,
    /// `/dev/userfaultfd` + USERFAULTFD_IOC_NEW + UFFDIO_API: Ok or the errno.
    #[serde(serialize_with = "ser_outcome")]
    pub dev_userfaultfd: Result<(), Errno>,
    /// Features UFFDIO_API offers on a user-mode-only fd.
    #[serde(serialize_with = "ser_features")]
    pub features: Features,
    /// Features offered on a full fd (needs privilege); None if none opened.
    #[serde(serialize_with = "ser_opt_features")]
    pub features_full: Option<Features>,
    /// Ioctls UFFDIO_API reports.
    #[serde(serialize_with = "ser_ioctls")]
    pub api_ioctls: Ioctls,
    /// Whether EVENT_FORK can be asked for (needs CAP_SYS_PTRACE).
    pub event_fork_allowed: bool,
    pub unprivileged_userfaultfd: Option<u32>,
    pub page_size: usize,
    pub huge_page_size: Option<usize>,
    pub hugepages_free: usize,
    pub nr_hugepages: Option<usize>,
    /// THP's global mode (`always`, `madvise`, `never`); None without THP.
    pub thp: Option<String>,
    pub pmd_size: Option<usize>,
    /// Anonymous mTHP sizes in bytes the kernel offers (incl. PMD size).
    pub thp_sizes: Vec<usize>,
    /// `/sys/kernel/debug/gup_test` exists (CONFIG_GUP_TEST + debugfs).
    pub gup_test: bool,
    /// An active swap device (for swap-out cases).
    pub swap: bool,
}

/// What KVM offers for guest_memfd, kept apart from [`Caps`] because it
/// costs a VM: creating and tearing one down took 7 of the 13 ms a case
/// needs on this machine, paid by every case that never touches KVM.
#[derive(Debug, Clone, Serialize)]
pub struct GuestMemfdCaps {
    /// `/dev/kvm` opened and a VM created: Ok or why not.
    #[serde(serialize_with = "ser_outcome")]
    pub kvm: Result<(), Unusable>,
    /// KVM_CAP_GUEST_MEMFD_FLAGS of a default VM; None without one.
    pub guest_memfd_flags: Option<u64>,
    /// guest_memfd areas can be made, or the reason their cases SKIP.
    #[serde(serialize_with = "ser_outcome")]
    pub guest_memfd: Result<(), Unusable>,
    /// A guest_memfd page was mapped shared, written and read back.
    #[serde(serialize_with = "ser_outcome")]
    pub guest_memfd_mmap: Result<(), Unusable>,
}

/// The guest_memfd probe ([`mem::guest_memfd::probe`]), run on first use.
pub fn guest_memfd_caps() -> GuestMemfdCaps {
    let gmem = mem::guest_memfd::probe();
    GuestMemfdCaps {
        kvm: gmem.kvm.clone(),
        guest_memfd_flags: gmem.flags.map(|f| f.bits()),
        guest_memfd: gmem.usable.clone().map(drop),
        guest_memfd_mmap: gmem.mmap.clone(),
    }
}

impl Caps {
    /// True when UFFDIO_API offers every bit of `f`.
    pub fn has(&self, f: Features) -> bool {
        self.features.contains(f)
    }

    /// The features of `f` the kernel lacks, as UAPI names.
    pub fn missing(&self, f: Features) -> Vec<String> {
        feature_names(f - self.features)
    }
}

fn open_api(flags: OpenFlags) -> Result<(Features, Ioctls), OpenError> {
    let (_, api) = Uffd::open_api(flags | OpenFlags::O_CLOEXEC, Features::empty())?;
    Ok((api.features, api.ioctls))
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The bracketed choice of a sysfs `a [b] c` file.
pub fn sysfs_choice(path: &str) -> Option<String> {
    let s = read_trim(path)?;
    let start = s.find('[')? + 1;
    let end = s[start..].find(']')? + start;
    Some(s[start..end].to_string())
}

fn thp_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let kb: usize = n.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            Some(kb * 1024)
        })
        .collect();
    v.sort_unstable();
    v
}

/// Probes now, whatever a run already knows (`uffdtest bench --suite` times it).
pub fn probe() -> Caps {
    let uname = nix::sys::utsname::uname().ok();
    let release = uname
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let umo = open_api(OpenFlags::UFFD_USER_MODE_ONLY);
    let full = open_api(OpenFlags::empty());
    let dev = Uffd::open_dev(OpenFlags::O_CLOEXEC)
        .and_then(|u| u.api(Features::empty()))
        .map(drop);
    let (features, api_ioctls) = umo.unwrap_or_default();
    let event_fork_allowed = Uffd::open(OpenFlags::UFFD_USER_MODE_ONLY | OpenFlags::O_CLOEXEC)
        .and_then(|u| u.api(Features::EVENT_FORK))
        .is_ok();
    Caps {
        release,
        root: nix::unistd::geteuid().is_root(),
        syscall: umo.map(drop),
        syscall_full: full.map(drop),
        dev_userfaultfd: dev,
        features,
        features_full: full.ok().map(|f| f.0),
        api_ioctls,
        event_fork_allowed,
        unprivileged_userfaultfd: read_trim("/proc/sys/vm/unprivileged_userfaultfd").and_then(|s| s.parse().ok()),
        page_size: mem::base_page_size(),
        huge_page_size: mem::hugetlb::default_size(),
        hugepages_free: mem::hugetlb::free(),
        nr_hugepages: mem::hugetlb::nr_hugepages(),
        thp: sysfs_choice("/sys/kernel/mm/transparent_hugepage/enabled"),
        pmd_size: mem::pmd_size(),
        thp_sizes: thp_sizes(),
        gup_test: std::path::Path::new("/sys/kernel/debug/gup_test").exists(),
        swap: read_trim("/proc/swaps").is_some_and(|s| s.lines().count() > 1),
    }
}

static CAPS: LazyLock<Caps> = LazyLock::new(|| cache::shared("caps", probe));

/// The running kernel's capabilities, probed on first use.
pub fn caps() -> &'static Caps {
    &CAPS
}

/// The `UFFD_FEATURE_*` bits a registration of `mem` in `mode` depends on:
/// the kernel documents each mode per memory type by one of these bits, so
/// this is the one place that knows which. MINOR on anonymous memory has no
/// bit (it is refused by design) and asks for none here.
pub fn features_for(mem: MemType, mode: RegisterMode) -> Features {
    let mut need = Features::empty();
    if mode.contains(RegisterMode::MISSING) {
        if mem.is_shmem() {
            need |= Features::MISSING_SHMEM;
        } else if mem.is_hugetlb() {
            need |= Features::MISSING_HUGETLBFS;
        }
    }
    if mode.contains(RegisterMode::WP) {
        need |= Features::PAGEFAULT_FLAG_WP;
        if !mem.is_anon() {
            need |= Features::WP_HUGETLBFS_SHMEM;
        }
    }
    if mode.contains(RegisterMode::MINOR) && !mem.is_anon() {
        need |= if mem.is_hugetlb() {
            Features::MINOR_HUGETLBFS
        } else {
            Features::MINOR_SHMEM
        };
    }
    need
}

/// Why this kernel or process cannot do what a caller asked: a test's SKIP
/// reason, a dash in the benchmark table. Display is the reason as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsupported {
    /// UFFDIO_API lacks these bits (needed to register `mem`, if given).
    MissingFeatures { missing: Features, mem: Option<MemType> },
    /// MINOR mode is defined for shmem and hugetlb only.
    MinorOnAnon(MemType),
    /// guest_memfd has no feature bit; REGISTER in `mode` was refused.
    GuestMemfd { mode: RegisterMode, errno: Errno },
    /// The registration probe could not run; its reason.
    Unprobed(String),
    /// userfaultfd(2) refused this process (EPERM, ENOSYS), as the
    /// `syscall` probe (user-mode-only) or `syscall_full` probe found.
    NoUserfaultfd(Errno),
    /// userfaultfd(2) without UFFD_USER_MODE_ONLY refused this process, as
    /// the `syscall_full` probe found.
    NoFullUserfaultfd(Errno),
    /// `/dev/userfaultfd` could not be used, as the `dev_userfaultfd` probe found.
    NoDevUserfaultfd(Errno),
    /// A behaviour the kernel added without a feature bit, as its probe
    /// ([`behaviours`]) found missing.
    Missing(Behaviour),
    /// UFFDIO_API refused UFFD_FEATURE_EVENT_FORK: no CAP_SYS_PTRACE.
    EventForkNeedsPtrace,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsupported::MissingFeatures { missing, mem } => {
                write!(f, "kernel lacks {}", feature_names(*missing).join(", "))?;
                match mem {
                    Some(m) => write!(f, " for {m}"),
                    None => Ok(()),
                }
            }
            Unsupported::MinorOnAnon(m) => write!(f, "MINOR mode is not defined for {m}"),
            Unsupported::GuestMemfd { mode, errno } => write!(
                f,
                "kernel has no userfaultfd support for guest_memfd (REGISTER {} → {errno:?})",
                mode_name(*mode).to_uppercase()
            ),
            Unsupported::Unprobed(why) => f.write_str(why),
            Unsupported::NoUserfaultfd(e) => write!(f, "cannot open a userfaultfd: {e}"),
            Unsupported::NoFullUserfaultfd(e) => {
                write!(f, "cannot open a userfaultfd without UFFD_USER_MODE_ONLY: {e}")
            }
            Unsupported::NoDevUserfaultfd(e) => write!(f, "cannot use /dev/userfaultfd: {e}"),
            Unsupported::Missing(b) => write!(f, "kernel has no {}", b.what()),
            Unsupported::EventForkNeedsPtrace => f.write_str("UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE"),
        }
    }
}

impl std::error::Error for Unsupported {}

/// Ok when UFFDIO_API offers every bit of `f`.
pub fn require_features(f: Features) -> Result<(), Unsupported> {
    let missing = f - caps().features;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Unsupported::MissingFeatures { missing, mem: None })
    }
}

/// Whether this kernel can register `mem` in `mode`, decided from the
/// feature bits that document it (a refusal despite them is a failure to
/// find, not a reason to skip). guest_memfd has no feature bit: its support
/// is probed, and a refusal is the reason.
pub fn registration_support(mem: MemType, mode: RegisterMode) -> Result<(), Unsupported> {
    if mode.is_empty() {
        return Ok(());
    }
    if mem == MemType::GuestMemfd {
        // Two KVM VMs a probe: once per run, not once per case.
        let probe = || probe_registration(mem, mode);
        return match cache::shared(&format!("register-guest_memfd-{}", mode.bits()), probe) {
            Registration::Granted(_) => Ok(()),
            Registration::Refused(errno) => Err(Unsupported::GuestMemfd { mode, errno }),
            Registration::Unprobed(why) => Err(Unsupported::Unprobed(why)),
        };
    }
    if mode.contains(RegisterMode::MINOR) && mem.is_anon() {
        return Err(Unsupported::MinorOnAnon(mem));
    }
    require_features(features_for(mem, mode)).map_err(|e| match e {
        Unsupported::MissingFeatures { missing, .. } => Unsupported::MissingFeatures {
            missing,
            mem: Some(mem),
        },
        e => e,
    })
}

/// Why no uffd could be had: this kernel or process cannot give one, or a
/// call failed that should not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFailure {
    Unsupported(Unsupported),
    Failed(OpenError),
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Unsupported(u) => u.fmt(f),
            OpenFailure::Failed(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenFailure {}

impl From<Unsupported> for OpenFailure {
    fn from(u: Unsupported) -> OpenFailure {
        OpenFailure::Unsupported(u)
    }
}

/// Whether this process can open a uffd with `flags`, from the probes
/// alone (`syscall`, `syscall_full`), never from the caller's own call.
pub fn require_open(flags: OpenFlags) -> Result<(), Unsupported> {
    let c = caps();
    let probe = if flags.contains(OpenFlags::UFFD_USER_MODE_ONLY) {
        &c.syscall
    } else {
        &c.syscall_full
    };
    match probe {
        Err(OpenError::Open(e @ (Errno::EPERM | Errno::ENOSYS))) if flags.contains(OpenFlags::UFFD_USER_MODE_ONLY) => {
            Err(Unsupported::NoUserfaultfd(*e))
        }
        Err(OpenError::Open(e @ (Errno::EPERM | Errno::ENOSYS))) => Err(Unsupported::NoFullUserfaultfd(*e)),
        _ => Ok(()),
    }
}

/// Whether `/dev/userfaultfd` can be used, from the `dev_userfaultfd` probe.
pub fn require_dev() -> Result<(), Unsupported> {
    match caps().dev_userfaultfd {
        Err(e @ (Errno::ENOENT | Errno::EACCES | Errno::EPERM | Errno::ENODEV)) => {
            Err(Unsupported::NoDevUserfaultfd(e))
        }
        _ => Ok(()),
    }
}

/// [`Uffd::open_api`] where the probes say it can work: a refusal the
/// probes foresaw (no userfaultfd for this process, EVENT_FORK without
/// CAP_SYS_PTRACE) is `Unsupported`, decided before the call; any error of
/// the call itself is `Failed`, never a reason to skip.
pub fn open_uffd(flags: OpenFlags, features: Features) -> Result<Uffd, OpenFailure> {
    require_open(flags)?;
    if features.contains(Features::EVENT_FORK) && !caps().event_fork_allowed {
        return Err(Unsupported::EventForkNeedsPtrace.into());
    }
    Uffd::open_api(flags, features)
        .map(|(u, _)| u)
        .map_err(OpenFailure::Failed)
}

/// Kernel behaviours added without a feature bit, each found by its own
/// probe on its own uffd and memory: a case that needs one skips on the
/// probe's answer, never on its own call's errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Behaviour {
    /// UFFDIO_WRITEPROTECT over several VMAs in one call (6.4).
    MultiVmaWriteprotect,
    /// UFFDIO_CONTINUE_MODE_WP (6.4).
    ContinueModeWp,
}

impl Behaviour {
    pub const ALL: [Behaviour; 2] = [Behaviour::MultiVmaWriteprotect, Behaviour::ContinueModeWp];

    /// What the kernel lacks, as a SKIP reason says it.
    pub fn what(self) -> &'static str {
        match self {
            Behaviour::MultiVmaWriteprotect => "multi-VMA UFFDIO_WRITEPROTECT (6.4): one VMA per call",
            Behaviour::ContinueModeWp => "UFFDIO_CONTINUE_MODE_WP (6.4)",
        }
    }

    /// The probe's name in `uffdtest caps`.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::MultiVmaWriteprotect => "multi-VMA WRITEPROTECT",
            Behaviour::ContinueModeWp => "CONTINUE_MODE_WP",
        }
    }

    /// Probes now, whatever a run already knows.
    pub fn probe(self) -> Result<bool, Unsupported> {
        match self {
            Behaviour::MultiVmaWriteprotect => probe_multi_vma_writeprotect(),
            Behaviour::ContinueModeWp => probe_continue_mode_wp(),
        }
    }
}

static BEHAVIOURS: [LazyLock<Result<bool, Unsupported>>; 2] = [
    LazyLock::new(|| cache::shared("multi_vma_writeprotect", || Behaviour::MultiVmaWriteprotect.probe())),
    LazyLock::new(|| cache::shared("continue_mode_wp", || Behaviour::ContinueModeWp.probe())),
];

/// A behaviour probe's answer: Ok(true) present, Ok(false) absent, Err why
/// the probe could not run (its prerequisite feature is missing).
pub fn behaviour(b: Behaviour) -> &'static Result<bool, Unsupported> {
    &BEHAVIOURS[b as usize]
}

/// Every behaviour probe with its answer.
pub fn behaviours() -> Vec<(Behaviour, &'static Result<bool, Unsupported>)> {
    Behaviour::ALL.iter().map(|&b| (b, behaviour(b))).collect()
}

/// Ok when the kernel has `b`; the probe's prerequisite missing is its own
/// reason.
pub fn require_behaviour(b: Behaviour) -> Result<(), Unsupported> {
    match behaviour(b) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Unsupported::Missing(b)),
        Err(why) => Err(why.clone()),
    }
}

/// A probe that could not set itself up, and why.
fn unprobed(e: impl std::fmt::Display) -> Unsupported {
    Unsupported::Unprobed(e.to_string())
}

/// Two registered anon VMAs (different modes keep them apart), one
/// WRITEPROTECT over both: Ok before multi-VMA support fails ENOENT.
fn probe_multi_vma_writeprotect() -> Result<bool, Unsupported> {
    require_features(Features::PAGEFAULT_FLAG_WP)?;
    let area = Area::new(MemType::Anon, 2).map_err(unprobed)?;
    let uffd = open_uffd(OpenFlags::DEFAULT, Features::PAGEFAULT_FLAG_WP).map_err(unprobed)?;
    let ps = area.page_size();
    uffd.register(area.page(0), ps, RegisterMode::MISSING | RegisterMode::WP)
        .map_err(|e| unprobed(format!("probe REGISTER: {e}")))?;
    uffd.register(area.page(1), ps, RegisterMode::WP)
        .map_err(|e| unprobed(format!("probe REGISTER: {e}")))?;
    match uffd.writeprotect(area.addr(), area.len(), crate::uffd::WriteprotectMode::WP) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => panic!("probe: UFFDIO_WRITEPROTECT over two registered VMAs: {e}"),
    }
}

/// UFFDIO_CONTINUE with MODE_WP over a range no VMA covers: a kernel
/// without the mode refuses the bit EINVAL before looking for a VMA; one
/// with it goes on and fails ENOENT.
fn probe_continue_mode_wp() -> Result<bool, Unsupported> {
    require_features(Features::MINOR_SHMEM)?;
    let uffd = open_uffd(OpenFlags::DEFAULT, Features::empty()).map_err(unprobed)?;
    // A page mapped then unmapped: nothing is there while we ask.
    let area = Area::new(MemType::Anon, 1).map_err(unprobed)?;
    let (addr, len) = (area.addr(), area.len());
    drop(area);
    match uffd.r#continue(addr, len, crate::uffd::ContinueMode::WP) {
        Err(crate::uffd::Partial {
            errno: Errno::EINVAL, ..
        }) => Ok(false),
        Err(crate::uffd::Partial {
            errno: Errno::ENOENT, ..
        }) => Ok(true),
        other => panic!("probe: UFFDIO_CONTINUE_MODE_WP over an unmapped range: {other:?}"),
    }
}

/// Every non-empty combination of MISSING, WP and MINOR.
pub fn register_modes() -> Vec<RegisterMode> {
    (1..8u64).map(RegisterMode::from_bits_retain).collect()
}

/// Registers one page of `mem` in `mode` on a fresh uffd offering every
/// feature the kernel has, and reports what the kernel said.
pub fn probe_registration(mem: MemType, mode: RegisterMode) -> Registration {
    let area = match Area::new(mem, 1) {
        Ok(a) => a,
        Err(e) => return Registration::Unprobed(e.to_string()),
    };
    // Ask for everything but the features that change fault delivery.
    let want = caps().features - Features::EVENT_FORK - Features::SIGBUS - Features::WP_ASYNC;
    let uffd = match Uffd::open_api(OpenFlags::UFFD_USER_MODE_ONLY | OpenFlags::O_CLOEXEC, want) {
        Ok((u, _)) => u,
        Err(e) => return Registration::Unprobed(e.to_string()),
    };
    match uffd.register(area.addr(), area.len(), mode) {
        Ok(i) => Registration::Granted(i),
        Err(e) => Registration::Refused(e),
    }
}

/// The registration matrix: every memory type × every mode.
pub fn registration_matrix() -> Vec<(MemType, RegisterMode, Registration)> {
    let mut out = Vec::new();
    for mem in MemType::ALL {
        for mode in register_modes() {
            out.push((mem, mode, probe_registration(mem, mode)));
        }
    }
    out
}

/// REGISTER on guest_memfd in each single mode: which modes the kernel
/// serves on it (none before guest_memfd gains userfaultfd support).
pub fn guest_memfd_registration() -> Vec<(RegisterMode, Registration)> {
    [RegisterMode::MISSING, RegisterMode::WP, RegisterMode::MINOR]
        .into_iter()
        .map(|m| (m, probe_registration(MemType::GuestMemfd, m)))
        .collect()
}

/// Short name of a mode combination: `missing+wp`.
pub fn mode_name(mode: RegisterMode) -> String {
    let names: Vec<_> = mode.iter_names().map(|(n, _)| n.to_lowercase()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join("+")
    }
}
