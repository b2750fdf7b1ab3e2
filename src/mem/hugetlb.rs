//! Huge page accounting for the hugetlb types: the default size's pool
//! (`vm.nr_hugepages`) and the 1 GiB pool (`hugepages-1048576kB` in sysfs).

use std::sync::Mutex;

/// Which hugetlb pool an area's pages come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageSize {
    /// The default huge page size (`Hugepagesize` in /proc/meminfo).
    Default,
    /// 1 GiB pages (x86 gigantic pages, `hugepagesz=1G`).
    Gigantic,
}

/// The sysfs directory of the 1 GiB pool.
pub const GIGANTIC_DIR: &str = "/sys/kernel/mm/hugepages/hugepages-1048576kB";
const GIB: usize = 1 << 30;

fn sysfs(file: &str) -> Option<usize> {
    std::fs::read_to_string(format!("{GIGANTIC_DIR}/{file}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The default huge page size; None without hugetlbfs.
pub fn default_size() -> Option<usize> {
    super::meminfo("Hugepagesize").filter(|&kb| kb > 0).map(|kb| kb * 1024)
}

/// Free default-size huge pages.
pub fn free() -> usize {
    super::meminfo("HugePages_Free").unwrap_or(0)
}

const NR: &str = "/proc/sys/vm/nr_hugepages";

pub fn nr_hugepages() -> Option<usize> {
    std::fs::read_to_string(NR).ok()?.trim().parse().ok()
}

pub fn set_nr_hugepages(n: usize) -> std::io::Result<()> {
    std::fs::write(NR, n.to_string())
}

impl PageSize {
    /// Bytes per page; None when the kernel has no such pool.
    pub fn bytes(self) -> Option<usize> {
        match self {
            PageSize::Default => default_size(),
            PageSize::Gigantic => std::path::Path::new(GIGANTIC_DIR).is_dir().then_some(GIB),
        }
    }

    /// Why [`PageSize::bytes`] is None: the SKIP reason.
    pub fn absent(self) -> &'static str {
        match self {
            PageSize::Default => "kernel has no hugetlb page size (CONFIG_HUGETLBFS off?)",
            PageSize::Gigantic => "kernel has no 1 GiB hugetlb pool (no /sys/kernel/mm/hugepages/hugepages-1048576kB)",
        }
    }

    /// Pages a new mapping can take: for 1 GiB pages, free minus those
    /// already promised to mappings (the pool is tiny, so it must be exact).
    pub fn free(self) -> usize {
        match self {
            PageSize::Default => free(),
            PageSize::Gigantic => sysfs("free_hugepages")
                .unwrap_or(0)
                .saturating_sub(sysfs("resv_hugepages").unwrap_or(0)),
        }
    }

    pub fn nr(self) -> Option<usize> {
        match self {
            PageSize::Default => nr_hugepages(),
            PageSize::Gigantic => sysfs("nr_hugepages"),
        }
    }

    fn set_nr(self, n: usize) -> std::io::Result<()> {
        match self {
            PageSize::Default => set_nr_hugepages(n),
            PageSize::Gigantic => std::fs::write(format!("{GIGANTIC_DIR}/nr_hugepages"), n.to_string()),
        }
    }

    /// Headroom added on top of what one area needs, so concurrent cases in
    /// one process do not each raise the pool; none for 1 GiB pages, where
    /// every page is a GiB of the machine's memory.
    fn slack(self) -> usize {
        match self {
            PageSize::Default => 64,
            PageSize::Gigantic => 0,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            PageSize::Default => "huge pages",
            PageSize::Gigantic => "1 GiB huge pages",
        }
    }
}

/// Serialises changes to the default pool inside this process; holds the
/// size it had before this process first raised it.
static LOCK: Mutex<Option<usize>> = Mutex::new(None);
/// The 1 GiB pool: how many pages this process added to it.
static RAISED_GIGANTIC: Mutex<Option<usize>> = Mutex::new(None);

extern "C" fn restore() {
    if let Ok(g) = LOCK.lock()
        && let Some(orig) = *g
    {
        let _ = set_nr_hugepages(orig);
    }
}

/// Gives back what this process added to the 1 GiB pool. Not the old size:
/// other processes (the runner's parallel cases) may raise it meanwhile, and
/// taking back only our own pages leaves theirs alone in any exit order.
extern "C" fn restore_gigantic() {
    if let Ok(mut g) = RAISED_GIGANTIC.lock()
        && let Some(added) = *g
        && added > 0
        && let Some(nr) = PageSize::Gigantic.nr()
    {
        let _ = PageSize::Gigantic.set_nr(nr.saturating_sub(added));
        *g = Some(0);
    }
}

/// Why `pages` huge pages could not be made free; Display is the
/// SKIP reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shortage {
    NoSysctl,
    NotRoot {
        pages: usize,
        free: usize,
    },
    Fragmented {
        pages: usize,
        now: usize,
        want: usize,
    },
    /// As the variant named, for the 1 GiB pool.
    Gigantic(Box<Shortage>),
}

impl std::fmt::Display for Shortage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.describe(f, PageSize::Default)
    }
}

impl Shortage {
    fn describe(&self, f: &mut std::fmt::Formatter<'_>, size: PageSize) -> std::fmt::Result {
        let (unit, knob) = match size {
            PageSize::Default => (size.unit(), "vm.nr_hugepages".to_string()),
            PageSize::Gigantic => (size.unit(), format!("{GIGANTIC_DIR}/nr_hugepages")),
        };
        match self {
            Shortage::NoSysctl => f.write_str("no /proc/sys/vm/nr_hugepages: kernel has no hugetlb"),
            Shortage::NotRoot { pages, free } => {
                write!(f, "need {pages} free {unit}, {free} free; run as root or raise {knob}")
            }
            Shortage::Fragmented { pages, now, want } => write!(
                f,
                "need {pages} free {unit}, only {now} after raising {knob} to {want} (memory fragmented?)"
            ),
            Shortage::Gigantic(s) => s.describe(f, PageSize::Gigantic),
        }
    }
}

impl std::error::Error for Shortage {}

/// Makes sure `pages` default-size huge pages are free. As root the pool is
/// raised (and put back when the process exits); otherwise Err says why not.
pub fn ensure_free(pages: usize) -> Result<(), Shortage> {
    ensure_free_of(PageSize::Default, pages)
}

/// [`ensure_free`] for the pool of `size`.
pub fn ensure_free_of(size: PageSize, pages: usize) -> Result<(), Shortage> {
    let wrap = |s: Shortage| match size {
        PageSize::Default => s,
        PageSize::Gigantic => Shortage::Gigantic(Box::new(s)),
    };
    let lock = match size {
        PageSize::Default => &LOCK,
        PageSize::Gigantic => &RAISED_GIGANTIC,
    };
    let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
    let free = size.free();
    if free >= pages {
        return Ok(());
    }
    let Some(nr) = size.nr() else {
        return Err(wrap(Shortage::NoSysctl));
    };
    if !nix::unistd::geteuid().is_root() {
        return Err(wrap(Shortage::NotRoot { pages, free }));
    }
    let want = nr + (pages - free) + size.slack();
    let _ = size.set_nr(want);
    let got = size.nr().unwrap_or(nr);
    match size {
        PageSize::Default if g.is_none() => {
            *g = Some(nr);
            // SAFETY: registering a plain extern "C" fn with no captures.
            unsafe { libc::atexit(restore) };
        }
        PageSize::Gigantic => {
            if g.is_none() {
                // SAFETY: as above.
                unsafe { libc::atexit(restore_gigantic) };
            }
            *g = Some(g.unwrap_or(0) + got.saturating_sub(nr));
        }
        PageSize::Default => {}
    }
    let now = size.free();
    if now >= pages {
        Ok(())
    } else {
        Err(wrap(Shortage::Fragmented { pages, now, want }))
    }
}

/// The lock file that serialises 1 GiB areas across processes.
const GIGANTIC_LOCK: &str = "/tmp/uffdtest-hugetlb-1g.lock";

/// A claim on the 1 GiB pool: while one is held, no other process of the
/// suite maps 1 GiB pages. The pool is tiny (a host rarely finds more than
/// a few free gigabytes in one piece once it has run a while), so the
/// runner's parallel cases take turns instead of racing for it and
/// skipping at random. Threads of one process share one lease.
#[derive(Debug)]
pub struct Lease {
    _file: std::fs::File,
}

/// The pages this process added go back while the lease is still held: given
/// back after it (at exit), they would vanish under the next holder, who
/// counted them free, and its mmap would fail ENOMEM.
impl Drop for Lease {
    fn drop(&mut self) {
        restore_gigantic();
    }
}

static LEASE: Mutex<std::sync::Weak<Lease>> = Mutex::new(std::sync::Weak::new());

/// Takes the 1 GiB pool, waiting for any other process holding it.
pub fn lease_gigantic() -> std::io::Result<std::sync::Arc<Lease>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut g = LEASE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = g.upgrade() {
        return Ok(l);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .create(true)
        .append(true)
        .mode(0o666)
        .custom_flags(libc::O_CLOEXEC)
        .open(GIGANTIC_LOCK)?;
    // SAFETY: flock on a descriptor we own; it blocks until granted.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let l = std::sync::Arc::new(Lease { _file: file });
    *g = std::sync::Arc::downgrade(&l);
    Ok(l)
}
