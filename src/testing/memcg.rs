//! Memory cgroups for the memcg cases: a child cgroup with a memory limit
//! (cgroup v2's `memory.max`, or v1's `memory.limit_in_bytes` where the
//! machine mounts only v1), a forked process placed in it, removed on drop.
//!
//! The probe reads `/proc/self/mountinfo` and `/proc/self/cgroup` only, so
//! a case skips for want of a controller before it calls anything it tests.

use super::fdpass::{recv_fd, send_fd, socketpair};
use super::{ChildExit, spawn_child};
use crate::uffd::Uffd;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where child cgroups with the memory controller can be made.
#[derive(Debug, Clone)]
pub struct Root {
    /// The cgroup directory new child cgroups go under.
    pub dir: PathBuf,
    /// cgroup v2 (else the v1 memory hierarchy).
    pub v2: bool,
    /// cgroup2 mounted with `memory_hugetlb_accounting` (6.6+): only then
    /// are hugetlb pages charged to a memcg (`mem_cgroup_hugetlb_try_charge`).
    pub hugetlb_accounting: bool,
}

/// `(mount point, fstype, super options)` of each mount in a mountinfo text.
///
/// Accepted format: `ID PARENT MAJ:MIN ROOT POINT OPTS [TAGS...] - FSTYPE SRC SUPEROPTS`.
fn mounts(mountinfo: &str) -> Vec<(String, String, String)> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let opts = r.nth(1).unwrap_or("");
            Some((point.to_string(), fstype.to_string(), opts.to_string()))
        })
        .collect()
}

/// This process's cgroup path in the hierarchy whose `/proc/self/cgroup`
/// line matches `pick` (`0::/path` for v2, `N:a,memory:/path` for v1).
fn own_path(pick: impl Fn(&str) -> bool) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        pick(ctrls).then(|| path.trim_start_matches('/').to_string())
    })
}

fn has_word(list: &str, word: &str) -> bool {
    list.split([' ', ',']).any(|w| w.trim() == word)
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Why the memcg cases cannot run here: each variant is a SKIP reason
/// (docs/skips.md maps them to this module's probe).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NoMemcg {
    #[error("no memory cgroup to make children in: {}", .0.join("; "))]
    NoController(Vec<String>),
    #[error("memcg is cgroup v1 here: hugetlb pages are charged to no memcg")]
    V1Hugetlb,
    #[error("cgroup2 not mounted with memory_hugetlb_accounting (6.6+): hugetlb pages are not charged")]
    NoHugetlbAccounting,
    #[error("cgroup v2 without CAP_SYS_RESOURCE: cannot keep the OOM killer from a member (oom_score_adj -1000)")]
    NoSysResource,
}

/// For the cases' helpers, whose Err is the SKIP reason as text.
impl From<NoMemcg> for String {
    fn from(e: NoMemcg) -> String {
        e.to_string()
    }
}

/// cgroup v2 with the memory controller delegated to children of this
/// process's cgroup or of the mount's root (the guest's init enables it at
/// the root); None when not, with why pushed onto `why`.
fn probe_v2(point: &str, opts: &str, why: &mut Vec<String>) -> Option<Root> {
    let mnt = Path::new(point);
    if !read(&mnt.join("cgroup.controllers")).is_some_and(|c| has_word(&c, "memory")) {
        why.push(format!(
            "cgroup2 at {point} has no memory controller (bound to cgroup v1?)"
        ));
        return None;
    }
    let own = own_path(|c| c.is_empty()).map(|p| mnt.join(p));
    let Some(dir) = own
        .into_iter()
        .chain([mnt.to_path_buf()])
        .find(|d| read(&d.join("cgroup.subtree_control")).is_some_and(|c| has_word(&c, "memory")))
    else {
        why.push(format!(
            "cgroup2 at {point}: no cgroup.subtree_control of ours enables memory"
        ));
        return None;
    };
    Some(Root {
        dir,
        v2: true,
        hugetlb_accounting: has_word(opts, "memory_hugetlb_accounting"),
    })
}

fn probe() -> Result<Root, NoMemcg> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| NoMemcg::NoController(vec![format!("/proc/self/mountinfo: {e}")]))?;
    let all = mounts(&text);
    let mut why = vec![];
    for (point, _, opts) in all.iter().filter(|m| m.1 == "cgroup2") {
        if let Some(r) = probe_v2(point, opts, &mut why) {
            return Ok(r);
        }
    }
    if let Some((point, _, _)) = all.iter().find(|m| m.1 == "cgroup" && has_word(&m.2, "memory")) {
        let own = own_path(|c| has_word(c, "memory")).unwrap_or_default();
        return Ok(Root {
            dir: Path::new(point).join(own),
            v2: false,
            hugetlb_accounting: false,
        });
    }
    why.push("no cgroup v1 memory hierarchy mounted".into());
    Err(NoMemcg::NoController(why))
}

/// The probe's answer, once per process.
pub fn root() -> Result<&'static Root, NoMemcg> {
    static ROOT: OnceLock<Result<Root, NoMemcg>> = OnceLock::new();
    ROOT.get_or_init(probe).as_ref().map_err(Clone::clone)
}

/// Ok when hugetlb pages are charged to a memcg.
pub fn require_hugetlb_accounting() -> Result<(), NoMemcg> {
    let r = root()?;
    if !r.v2 {
        return Err(NoMemcg::V1Hugetlb);
    }
    if !r.hugetlb_accounting {
        return Err(NoMemcg::NoHugetlbAccounting);
    }
    Ok(())
}

/// Whether `cap` is in this process's effective set (`CapEff` of
/// /proc/self/status).
fn has_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        .is_some_and(|m| m & (1 << cap) != 0)
}

const CAP_SYS_RESOURCE: u32 = 24;

/// Ok when [`Memcg::refuse_over_limit`] can work here. v1 disables the cgroup's OOM killer (`memory.oom_control`);
/// v2 has no such switch, so the members go to oom_score_adj -1000, which
/// takes CAP_SYS_RESOURCE (containers often drop it).
pub fn require_charge_refusal() -> Result<(), NoMemcg> {
    if !root()?.v2 || has_cap(CAP_SYS_RESOURCE) {
        Ok(())
    } else {
        Err(NoMemcg::NoSysResource)
    }
}

/// A child cgroup of [`root`]; its processes must be gone before it drops.
pub struct Memcg {
    dir: PathBuf,
    v2: bool,
}

impl Memcg {
    /// Makes a fresh child cgroup, unlimited until [`Memcg::limit`].
    pub fn new() -> Result<Memcg, NoMemcg> {
        let root = root()?;
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.dir.join(format!("uffdtest-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Ok(Memcg { dir, v2: root.v2 })
    }

    fn file(&self, v2: &str, v1: &str) -> PathBuf {
        self.dir.join(if self.v2 { v2 } else { v1 })
    }

    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        std::fs::write(path, value)
    }

    /// Moves process `pid` (0: the caller) into the cgroup. Charges it
    /// made before stay where they were.
    pub fn enter(&self, pid: i32) {
        let p = self.dir.join("cgroup.procs");
        self.write(&p, &pid.to_string())
            .unwrap_or_else(|e| panic!("write {pid} to {}: {e}", p.display()));
    }

    /// Makes a charge over the limit by the mm of `pid` (a member) fail
    /// instead of killing: v1 turns the cgroup's OOM killer off (an ioctl's
    /// charge then fails at once; only a user fault would wait), v2 makes
    /// `pid` no OOM victim (the killer then finds none and the charge
    /// fails). [`require_charge_refusal`] says whether it can.
    pub fn refuse_over_limit(&self, pid: Pid) {
        if self.v2 {
            set_oom_score_adj(pid, -1000);
        } else {
            let p = self.dir.join("memory.oom_control");
            self.write(&p, "1")
                .unwrap_or_else(|e| panic!("write 1 to {}: {e}", p.display()));
        }
    }

    /// Bytes charged to the cgroup now.
    pub fn usage(&self) -> u64 {
        let p = self.file("memory.current", "memory.usage_in_bytes");
        let s = read(&p).unwrap_or_else(|| panic!("read {}", p.display()));
        s.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {s:?}: {e}", p.display()))
    }

    /// Sets the limit to `bytes` (None: no limit), and swap to none, so the
    /// limit holds without paging anonymous memory out.
    pub fn limit(&self, bytes: Option<u64>) {
        let unlimited = if self.v2 { "max" } else { "-1" };
        let text = bytes.map_or(unlimited.to_string(), |b| b.to_string());
        let writes: &[(&str, &str)] = if self.v2 {
            &[("memory.max", &text), ("memory.swap.max", "0")]
        } else {
            // v1 caps memory+swap together, never below the memory limit:
            // lift it, set the memory limit, then cap memory+swap there.
            &[
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", &text),
                ("memory.memsw.limit_in_bytes", &text),
            ]
        };
        for &(file, v) in writes {
            let p = self.dir.join(file);
            match self.write(&p, v) {
                Ok(()) => {}
                // No swap accounting (a kernel without CONFIG_SWAP): there
                // is no swap file to cap; kernfs answers the create EACCES.
                Err(_) if file.contains("swap") && !p.exists() => {}
                Err(e) => panic!("write {v} to {}: {e}", p.display()),
            }
        }
    }

    /// Sets the limit `headroom` bytes above what is charged now.
    pub fn limit_headroom(&self, headroom: u64) {
        self.limit(Some(self.usage() + headroom));
    }

    /// `key`'s count in a `key value` per line file.
    fn counter(&self, path: &Path, key: &str) -> u64 {
        let s = read(path).unwrap_or_else(|| panic!("read {}", path.display()));
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {}: {s:?}", path.display()))
    }

    /// Processes the OOM killer killed in this cgroup (v2 `memory.events`,
    /// v1 `memory.oom_control`, both 4.13+).
    pub fn oom_kills(&self) -> u64 {
        self.counter(&self.file("memory.events", "memory.oom_control"), "oom_kill")
    }
}

impl Drop for Memcg {
    fn drop(&mut self) {
        // The last member's exit can trail its reaping by a moment (EBUSY).
        let end = Instant::now() + Duration::from_secs(5);
        while let Err(e) = std::fs::remove_dir(&self.dir) {
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > end {
                eprintln!("rmdir {}: {e}", self.dir.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Sets process `pid`'s `oom_score_adj` (-1000: never an OOM victim).
pub fn set_oom_score_adj(pid: Pid, adj: i32) {
    let p = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&p, adj.to_string()).unwrap_or_else(|e| panic!("write {adj} to {p}: {e}"));
}

/// `len` bytes at `addr` in process `pid`, read with process_vm_readv(2)
/// (the pages must be present: a missing registered page would fault).
pub fn read_remote(pid: Pid, addr: usize, len: usize) -> Vec<u8> {
    use nix::sys::uio::{RemoteIoVec, process_vm_readv};
    let mut buf = vec![0u8; len];
    let n = process_vm_readv(
        pid,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &[RemoteIoVec { base: addr, len }],
    )
    .unwrap_or_else(|e| panic!("process_vm_readv({pid}, {addr:#x}, {len}): {e}"));
    assert_eq!(n, len, "process_vm_readv: short read");
    buf
}

/// Requests a [`Tenant`] serves.
const GO: u8 = b'g';
const READ: u8 = b'r';
const HOG: u8 = b'h';

/// A forked process whose own mm is registered on a uffd it hands to us:
/// we move it into a cgroup, then act as its monitor from outside. It
/// reads bytes of its memory when asked (each read on a thread of its own,
/// so a read blocked in a fault leaves it serving), or allocates until the
/// OOM killer ends it. Killed and reaped on drop if still running.
pub struct Tenant {
    pid: Pid,
    sock: OwnedFd,
    reaped: bool,
}

fn write_all(fd: RawFd, b: &[u8]) {
    let n = nix::unistd::write(unsafe_fd(fd), b).unwrap_or_else(|e| panic!("write to tenant socket: {e}"));
    assert_eq!(n, b.len(), "short write to the tenant socket");
}

fn read_exact(fd: RawFd, b: &mut [u8]) -> bool {
    let mut got = 0;
    while got < b.len() {
        match nix::unistd::read(unsafe_fd(fd), &mut b[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(e) => panic!("read from tenant socket: {e}"),
        }
    }
    true
}

fn unsafe_fd(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: the socket outlives every call made through it here.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Touches fresh anonymous pages until the process dies (the OOM killer).
fn hog() -> ! {
    const LEN: usize = 1 << 32;
    // SAFETY: a fresh private anonymous reservation, never unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap hog: {}", Errno::last());
    for off in (0..LEN).step_by(crate::mem::base_page_size()) {
        // SAFETY: inside the reservation.
        unsafe { std::ptr::write_volatile((p as *mut u8).add(off), 1) };
    }
    panic!("allocated {LEN} bytes and was not killed");
}

/// The tenant's side: wait for GO, `setup`, send the uffd, then serve.
fn serve(sock: RawFd, setup: impl FnOnce() -> Uffd) -> i32 {
    let mut b = [0u8; 1];
    if !read_exact(sock, &mut b) || b[0] != GO {
        return 2;
    }
    let uffd = setup();
    assert!(send_fd(sock, uffd.as_raw_fd()), "sendmsg(SCM_RIGHTS)");
    let mut req = [0u8; 9];
    while read_exact(sock, &mut req) {
        match req[0] {
            READ => {
                let addr = u64::from_ne_bytes(req[1..].try_into().unwrap()) as usize;
                std::thread::spawn(move || write_all(sock, &[super::read_byte(addr)]));
            }
            HOG => hog(),
            r => panic!("unknown request {r}"),
        }
    }
    0
}

impl Tenant {
    /// Forks the process; it waits for [`Tenant::start`] before it runs
    /// `setup` (open a uffd, register its area), so it can be placed in a
    /// cgroup first and its setup charged there.
    pub fn spawn(setup: impl FnOnce() -> Uffd) -> Tenant {
        let (ours, theirs) = socketpair();
        let fd = theirs.as_raw_fd();
        let pid = spawn_child(move || serve(fd, setup));
        drop(theirs);
        Tenant {
            pid,
            sock: ours,
            reaped: false,
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Lets the tenant run its setup; returns the uffd it registered with.
    pub fn start(&self) -> Uffd {
        write_all(self.sock.as_raw_fd(), &[GO]);
        Uffd::from_owned(recv_fd(self.sock.as_raw_fd()))
    }

    /// Asks the tenant to read the byte at `addr` (a fault there blocks
    /// until resolved); [`Tenant::answer`] returns it.
    pub fn read(&self, addr: usize) {
        let mut req = [READ; 9];
        req[1..].copy_from_slice(&(addr as u64).to_ne_bytes());
        write_all(self.sock.as_raw_fd(), &req);
    }

    /// The byte a [`Tenant::read`] read.
    pub fn answer(&self) -> u8 {
        let mut b = [0u8; 1];
        assert!(
            read_exact(self.sock.as_raw_fd(), &mut b),
            "the tenant died before answering"
        );
        b[0]
    }

    /// Asks the tenant to allocate until the OOM killer ends it.
    pub fn hog(&self) {
        write_all(self.sock.as_raw_fd(), &[HOG; 9]);
    }

    /// Closes our end (the tenant then exits 0 once its reads are
    /// answered) and waits `deadline` for its end; a tenant still running
    /// then is killed and the case fails.
    pub fn finish(mut self, deadline: Duration) -> ChildExit {
        // SAFETY: shutdown(2) on our own socket.
        unsafe { libc::shutdown(self.sock.as_raw_fd(), libc::SHUT_WR) };
        let end = Instant::now() + deadline;
        loop {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => return self.reaped(ChildExit::Exited(c)),
                Ok(WaitStatus::Signaled(_, s, _)) => return self.reaped(ChildExit::Signaled(s)),
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => panic!("waitpid({}): {e}", self.pid),
            }
            assert!(
                Instant::now() < end,
                "tenant {} still running after {deadline:?}",
                self.pid
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn reaped(&mut self, e: ChildExit) -> ChildExit {
        self.reaped = true;
        e
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = kill(self.pid, Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_point_type_and_super_options() {
        let text = "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n";
        assert_eq!(
            mounts(text),
            vec![
                (
                    "/sys/fs/cgroup/unified".into(),
                    "cgroup2".into(),
                    "rw,nsdelegate".into()
                ),
                ("/sys/fs/cgroup/memory".into(), "cgroup".into(), "rw,memory".into()),
            ]
        );
        assert!(has_word("rw,memory_hugetlb_accounting", "memory_hugetlb_accounting"));
        assert!(!has_word("rw,memory_recursiveprot", "memory"));
    }
}
