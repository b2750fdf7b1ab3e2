//! Prepares the machine for a run and puts it back: huge pages reserved,
//! sysctls set, every value restored at the end, after a case that left one
//! changed, and on Ctrl-C or SIGTERM.
//!
//! Watched always: `vm.nr_hugepages` and `vm.unprivileged_userfaultfd` (serial
//! cases change the latter and may be killed before their guard's Drop runs).

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The sysctls every run snapshots and restores.
pub const WATCHED: [&str; 2] = ["vm.nr_hugepages", "vm.unprivileged_userfaultfd"];

/// What to restore, reachable from the signal thread.
static SAVED: Mutex<Vec<(PathBuf, String)>> = Mutex::new(Vec::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// `vm.nr_hugepages` → `/proc/sys/vm/nr_hugepages`.
pub fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

pub fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(name))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn write_sysctl(name: &str, value: &str) -> Result<(), EnvError> {
    std::fs::write(sysctl_path(name), value).map_err(|source| EnvError::SetSysctl {
        name: name.into(),
        value: value.into(),
        source,
    })
}

/// What could not be done to the machine.
#[derive(Debug)]
pub enum EnvError {
    SetSysctl {
        name: String,
        value: String,
        source: std::io::Error,
    },
    SignalThread(std::io::Error),
}

impl std::fmt::Display for EnvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvError::SetSysctl { name, value, source } => write!(f, "cannot set {name}={value}: {source}"),
            EnvError::SignalThread(e) => write!(f, "cannot catch signals: {e}"),
        }
    }
}

impl std::error::Error for EnvError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EnvError::SetSysctl { source, .. } | EnvError::SignalThread(source) => Some(source),
        }
    }
}

/// The snapshot of the watched values; what the run wrote is restored on drop.
pub struct Env {
    saved: Vec<(String, String)>,
}

impl Env {
    /// Snapshots the watched sysctls (and those in `set`), raises
    /// `vm.nr_hugepages` to at least `hugepages` and the 1 GiB pool to at
    /// least `gigantic` (never lowers them), then sets `set`. Returns notes
    /// for the KTAP header (what could not be done and why).
    pub fn setup(hugepages: Option<u64>, gigantic: Option<u64>, set: &[(String, String)]) -> (Env, Vec<String>) {
        let mut notes = Vec::new();
        let mut names: Vec<String> = WATCHED.iter().map(|s| s.to_string()).collect();
        names.extend(set.iter().map(|(k, _)| k.clone()));
        names.dedup();
        let saved: Vec<(String, String)> = names
            .iter()
            .filter_map(|n| read_sysctl(n).map(|v| (n.clone(), v)))
            .collect();
        // Only what this run writes is put back at its end: another runner on
        // the same machine may have changed a value meanwhile, and it is theirs.
        SAVED.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let remember = |name: &str| {
            if let Some((_, v)) = saved.iter().find(|(n, _)| n == name) {
                let mut s = SAVED.lock().unwrap_or_else(|e| e.into_inner());
                if !s.iter().any(|(p, _)| *p == sysctl_path(name)) {
                    s.push((sysctl_path(name), v.clone()));
                }
            }
        };
        let root = nix::unistd::geteuid().is_root();
        if let Some(want) = hugepages {
            let have: u64 = read_sysctl("vm.nr_hugepages").and_then(|v| v.parse().ok()).unwrap_or(0);
            if have < want {
                if !root {
                    notes.push(format!(
                        "not root: vm.nr_hugepages stays {have} (wanted {want}); hugetlb cases may skip"
                    ));
                } else if let Err(e) = write_sysctl("vm.nr_hugepages", &want.to_string()) {
                    notes.push(e.to_string());
                } else {
                    remember("vm.nr_hugepages");
                    let got = read_sysctl("vm.nr_hugepages").unwrap_or_default();
                    notes.push(format!(
                        "vm.nr_hugepages raised from {have} to {got} for the run (wanted {want}; restored at the end)"
                    ));
                }
            }
        }
        if let Some(want) = gigantic {
            notes.extend(raise_gigantic(want, root));
        }
        for (k, v) in set {
            remember(k);
            match write_sysctl(k, v) {
                Ok(()) => notes.push(format!("{k}={v} for the run (restored at the end)")),
                Err(e) => notes.push(e.to_string()),
            }
        }
        (Env { saved }, notes)
    }

    /// After a case: any watched value the case left changed is put back.
    /// Returns a note per restored value. (Values set for the run by `set`
    /// count as changed only if they differ from what the run set.)
    pub fn check(&self, expected: &[(String, String)]) -> Vec<String> {
        let mut notes = Vec::new();
        for (name, orig) in &self.saved {
            let want = expected.iter().find(|(k, _)| k == name).map(|(_, v)| v).unwrap_or(orig);
            if name == "vm.nr_hugepages" {
                continue; // raised for the run on purpose; cases may only grow it, checked at the end
            }
            if let Some(now) = read_sysctl(name)
                && now != *want
            {
                let r = write_sysctl(name, want);
                notes.push(match r {
                    Ok(()) => format!("the case left {name}={now}; restored {want}"),
                    Err(e) => format!("the case left {name}={now}; {e}"),
                });
            }
        }
        notes
    }

    /// Puts back what this run wrote (raised huge pages, `--sysctl` values).
    pub fn restore(&self) {
        restore_saved();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.restore();
        SAVED.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The 1 GiB hugetlb pool's size (absent on kernels or arches without it).
pub const GIGANTIC_POOL: &str = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";

/// Raises the 1 GiB pool to `want` pages for the run, remembering the old
/// size; a note says what happened, or nothing when the pool already has
/// enough or the kernel has none.
fn raise_gigantic(want: u64, root: bool) -> Option<String> {
    let read = || -> Option<u64> { std::fs::read_to_string(GIGANTIC_POOL).ok()?.trim().parse().ok() };
    let have = read()?;
    if have >= want {
        return None;
    }
    if !root {
        return Some(format!(
            "not root: the 1 GiB hugetlb pool stays {have} (wanted {want}); hugetlb-1g cases may skip"
        ));
    }
    if let Err(e) = std::fs::write(GIGANTIC_POOL, want.to_string()) {
        return Some(format!("cannot set {GIGANTIC_POOL}={want}: {e}"));
    }
    SAVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((PathBuf::from(GIGANTIC_POOL), have.to_string()));
    let got = read().unwrap_or(0);
    Some(format!(
        "1 GiB hugetlb pool raised from {have} to {got} for the run (wanted {want}{}; restored at the end)",
        if got < want {
            "; memory too fragmented for more"
        } else {
            ""
        }
    ))
}

/// Writes back what [`Env::setup`] saved (also callable from the signal thread).
fn restore_saved() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (path, v) in saved {
        let now = std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if now != v {
            let _ = std::fs::write(&path, &v);
        }
    }
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived since [`catch_signals`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`interrupted`] for the run loop,
/// which then kills the running cases and returns (restoring through Drop).
/// A second signal restores at once and exits 130. A handler writes each
/// signal to a pipe that a thread of its own reads (signal-hook): no signal
/// is blocked, so every child (each case, QEMU, `load`'s command) starts
/// with the default disposition and a clean mask, and a case's timeout
/// SIGTERM reaches it. A second call does nothing: a caller that starts
/// threads of its own (the flake hunter's load) calls it first, and the run
/// calls it again.
pub fn catch_signals() -> Result<(), EnvError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    static CAUGHT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut caught = CAUGHT.lock().unwrap_or_else(|e| e.into_inner());
    if *caught {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(EnvError::SignalThread)?;
    std::thread::Builder::new()
        .name("uffdtest-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = nix::sys::signal::Signal::try_from(sig).map_or_else(|_| sig.to_string(), |s| s.to_string());
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    restore_saved();
                    eprintln!("uffdtest: {name} again: sysctls restored, exiting");
                    std::process::exit(130);
                }
                eprintln!("uffdtest: {name}: stopping the running cases and restoring sysctls");
            }
        })
        .map_err(EnvError::SignalThread)?;
    *caught = true;
    Ok(())
}

/// The child gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), so a run that is killed or
/// interrupted never leaves its QEMU, or the child process running a VM, going on alone for hours. The pre_exec
/// makes std fork instead of posix_spawn: for one long-lived child, not for every case.
pub fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure calls only prctl(2) and getppid(2), both async-signal-safe, and
    // touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl took: then nobody is left to kill us.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the parent died before the child started"));
            }
            Ok(())
        });
    }
}

/// Where the runner tells each case its run's directory.
pub const RUN_DIR_ENV: &str = "UFFDTEST_RUN_DIR";

/// A directory the cases of one run share, removed when the run ends: a
/// case that works out something every case needs (the suite's capability
/// probes) leaves it there for the processes after it, which then need not
/// work it out again. Nothing a case writes there decides another's verdict
/// by itself: what is left there is what the first one found.
pub struct RunDir(pub std::path::PathBuf);

impl RunDir {
    pub fn create() -> Option<RunDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("uffdtest-run-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&dir).ok().map(|()| RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_paths() {
        assert_eq!(
            sysctl_path("vm.nr_hugepages"),
            PathBuf::from("/proc/sys/vm/nr_hugepages")
        );
    }

    #[test]
    fn a_child_started_to_die_with_its_parent_is_killed_when_the_starting_thread_ends() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = std::thread::spawn(|| {
            let mut cmd = std::process::Command::new("sleep");
            cmd.arg("60");
            die_with_parent(&mut cmd);
            cmd.spawn().expect("spawn sleep")
        })
        .join()
        .unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}
