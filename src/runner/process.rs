//! The process side of a case: its own process group, its output captured
//! by a thread, a watcher that says the moment it exits, orphans reaped
//! when the runner is PID 1, and where its threads hang in the kernel.

use super::discover::Case;
use super::run::RunOptions;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// Most output kept per case; a runaway printer is cut here.
const OUTPUT_CAP: usize = 1 << 20;

/// Why a case's process could not be started.
#[derive(Debug)]
pub enum SpawnError {
    Pipe(std::io::Error),
    Dup(std::io::Error),
    Start {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::Pipe(e) => write!(f, "cannot make a pipe: {e}"),
            SpawnError::Dup(e) => write!(f, "cannot dup a pipe: {e}"),
            SpawnError::Start { path, source } => write!(f, "cannot start {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::Pipe(e) | SpawnError::Dup(e) | SpawnError::Start { source: e, .. } => Some(e),
        }
    }
}

pub(super) fn spawn(opts: &RunOptions, case: &Case) -> Result<(Child, Captured), SpawnError> {
    use std::os::unix::process::CommandExt;
    let (mut rd, wr) = std::io::pipe().map_err(SpawnError::Pipe)?;
    let pipe = nix::sys::stat::fstat(&rd)
        .map_err(|e| SpawnError::Pipe(e.into()))?
        .st_ino;
    let wr2 = wr.try_clone().map_err(SpawnError::Dup)?;
    let mut cmd = Command::new(&case.path);
    cmd.arg(&case.test).args(["--exact", "--nocapture", "--test-threads=1"]);
    if case.ignored {
        cmd.arg("--include-ignored");
    }
    cmd.envs(opts.case_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(wr)
        .stderr(wr2)
        .process_group(0);
    // No pre_exec: it would turn every case's spawn from posix_spawn into a
    // fork of this process (when the hunter's load still lived here, a hunt
    // pass went from ~35 s to ~6 min), and nothing needs it.
    let child = cmd.spawn().map_err(|source| SpawnError::Start {
        path: case.path.clone(),
        source,
    })?;
    // `cmd` holds the write ends: drop it so EOF comes when the case's group is gone.
    drop(cmd);
    let (tx, rx) = mpsc::channel();
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match rd.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut buf = b.lock().unwrap_or_else(|e| e.into_inner());
                    if buf.len() < OUTPUT_CAP {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.len() >= OUTPUT_CAP {
                            buf.extend_from_slice(b"\n[output cut at 1 MiB]\n");
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Ok((child, Captured { buf, eof: rx, pipe }))
}

/// A case's output, read by a thread of its own so a chatty case never blocks on a full pipe.
pub(super) struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    eof: mpsc::Receiver<()>,
    /// The pipe's inode, to find who else still holds it open.
    pipe: u64,
}

impl Captured {
    /// How long the pipe may stay open after the case's group is gone
    /// before anyone is asked who holds it.
    const GRACE: Duration = Duration::from_secs(2);
    /// How long a pipe nobody else holds may take to reach EOF: only the
    /// reader thread is late then (a loaded machine), and giving up early
    /// cut off a passing case's last lines. A deadlock guard.
    const PATIENCE: Duration = Duration::from_secs(60);

    /// The output once the pipe is closed, or what came so far if a process
    /// that escaped the case's group still holds it open (or, past
    /// [`Self::PATIENCE`], if the pipe never closes).
    pub(super) fn finish(self) -> Vec<u8> {
        let start = std::time::Instant::now();
        while let Err(mpsc::RecvTimeoutError::Timeout) = self.eof.recv_timeout(Self::GRACE) {
            if start.elapsed() >= Self::PATIENCE || held_elsewhere(self.pipe) {
                break;
            }
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Whether a process other than this one has pipe `ino` open (a `/proc/PID/fd` link `pipe:[ino]`).
fn held_elsewhere(ino: u64) -> bool {
    let me = std::process::id().to_string();
    let target = format!("pipe:[{ino}]");
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| {
            n.to_str()
                .is_some_and(|n| n != me && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .any(|pid| {
            std::fs::read_dir(std::path::Path::new("/proc").join(&pid).join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()))
        })
}

/// Tells the run loop the moment process `pid` exits, so the next case
/// starts then rather than at the loop's next poll: polling every 5 ms cost
/// 2.5 ms a case, seconds over the suite. WNOWAIT leaves the reaping (and
/// the exit status) to the case's `try_wait`; if that came first, waitid
/// fails at once and the extra wake-up is harmless.
pub(super) fn watch_exit(pid: i32, exited: mpsc::Sender<()>) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    std::thread::spawn(move || {
        let pid = nix::unistd::Pid::from_raw(pid);
        while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {}
        let _ = exited.send(());
    });
}

/// `Child::try_wait` with the exited process's CPU (user + system, its
/// waited-for children included) from wait4(2), which std does not give.
pub(super) fn try_wait_cpu(child: &mut Child) -> std::io::Result<Option<(ExitStatus, Duration)>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: rusage is plain data the kernel fills in.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes only through the two valid pointers given.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, libc::WNOHANG, &mut ru) };
    match pid {
        0 => Ok(None),
        p if p < 0 => Err(std::io::Error::last_os_error()),
        _ => {
            let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
            Ok(Some((ExitStatus::from_raw(status), tv(ru.ru_utime) + tv(ru.ru_stime))))
        }
    }
}

/// Reaps exited processes that are not a running case's leader (orphans
/// re-parented to PID 1). A leader's status is left for its `try_wait`.
pub(super) fn reap_orphans(is_leader: impl Fn(i32) -> bool) {
    use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
    loop {
        // Peek without reaping: which child has exited?
        let Ok(st) = waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ) else {
            return;
        };
        let Some(pid) = st.pid() else { return };
        if is_leader(pid.as_raw()) {
            return;
        }
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
    }
}

/// Most kernel stack frames quoted per blocked thread.
const STACK_FRAMES: usize = 8;

/// Each thread of each process in group `pgid`: its state, where it waits in
/// the kernel (`wchan`), and its kernel stack (readable by root only), e.g.
/// `pid 812 tid 813 (copy-1f2e) S wchan handle_userfault` then `  handle_userfault+0x1a5/0x5e0`.
pub(super) fn hang_report(pgid: i32) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let mut pids: Vec<i32> = procs
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort();
    for pid in pids {
        if proc_stat(&format!("/proc/{pid}/stat")).map(|(_, _, pg)| pg) != Some(pgid) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        let mut tids: Vec<i32> = tasks
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort();
        for tid in tids {
            let dir = format!("/proc/{pid}/task/{tid}");
            let Some((comm, state, _)) = proc_stat(&format!("{dir}/stat")) else {
                continue;
            };
            let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
            let wchan = if wchan.is_empty() || wchan == "0" {
                "-".to_string()
            } else {
                wchan
            };
            out.push(format!("pid {pid} tid {tid} ({comm}) {state} wchan {wchan}"));
            if let Ok(stack) = std::fs::read_to_string(format!("{dir}/stack")) {
                out.extend(
                    stack
                        .lines()
                        .take(STACK_FRAMES)
                        .map(|l| format!("  {}", l.split_once("] ").map_or(l, |(_, f)| f))),
                );
            }
        }
    }
    out
}

/// (comm, state, pgrp) from a `/proc/.../stat` line: `pid (comm) S ppid pgrp ...`.
fn proc_stat(path: &str) -> Option<(String, char, i32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let (head, rest) = s.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    let _ppid = f.next()?;
    let pgrp = f.next()?.parse().ok()?;
    Some((comm, state, pgrp))
}

pub(super) fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_is_held_elsewhere_while_a_child_has_it_open() {
        let (rd, wr) = std::io::pipe().unwrap();
        let ino = nix::sys::stat::fstat(&rd).unwrap().st_ino;
        assert!(!held_elsewhere(ino), "only this process holds it");
        let mut child = Command::new("sleep").arg("30").stdout(wr).spawn().unwrap();
        assert!(held_elsewhere(ino), "the child holds the write end");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!held_elsewhere(ino), "nobody once the child is gone");
    }
}
