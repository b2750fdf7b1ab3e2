//! The hostile load in a process of its own, beside the runner rather than
//! inside it. In the runner's address space the churn's MADV_PAGEOUT held
//! the runner's mmap_lock for seconds under TCG, and the thread reading a
//! case's output stalled behind it: the case's last lines came after the
//! runner had stopped waiting, and a passing case read as "no test run".
//! Apart, the load presses on the machine, not on the runner.
//!
//! The child is this executable again ([`COMMAND`], hidden): its stdin
//! carries the [`LoadConfig`] as one JSON line and then stays open; the
//! child says `ready` once the churn has been round once, and when stdin
//! closes (the parent stopped it, or died) it stops and prints its totals.

use super::load::{Load, LoadConfig, LoadError, LoadTotals};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// The hidden subcommand the child runs.
pub const COMMAND: &str = "load-child";

const READY: &str = "ready";

/// The load running in its child; stops when dropped.
pub struct LoadChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LoadChild {
    /// Starts the child and waits until its load is warm (at most the
    /// minute [`Load::warm_up`] allows).
    pub fn start(cfg: &LoadConfig) -> Result<LoadChild, LoadError> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(LoadError::Spawn)?;
        let mut child = Command::new(exe)
            // Not "/init": the guest's init re-run must not take itself for PID 1's.
            .arg0("uffdtest")
            .arg(COMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(LoadError::Spawn)?;
        let mut stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut me = LoadChild {
            child,
            stdin: None,
            stdout,
        };
        let line = serde_json::to_string(cfg).expect("a LoadConfig serialises");
        writeln!(stdin, "{line}").map_err(LoadError::Spawn)?;
        me.stdin = Some(stdin);
        match me.read_line()?.as_str() {
            READY => Ok(me),
            other => Err(LoadError::Child(format!("said {other:?}, not {READY:?}"))),
        }
    }

    fn read_line(&mut self) -> Result<String, LoadError> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err(LoadError::Child(match self.child.wait() {
                Ok(st) => format!("ended ({st})"),
                Err(e) => format!("ended, cannot wait for it: {e}"),
            })),
            Ok(_) => Ok(line.trim_end().to_string()),
            Err(e) => Err(LoadError::Child(e.to_string())),
        }
    }

    /// Stops the load and returns what it did; zeros if the child cannot say.
    pub fn stop(mut self) -> LoadTotals {
        self.stdin = None;
        let totals = self
            .read_line()
            .ok()
            .and_then(|l| serde_json::from_str::<(u64, u64)>(&l).ok())
            .map(|(churn_rounds, compactions)| LoadTotals {
                churn_rounds,
                compactions,
            })
            .unwrap_or_default();
        let _ = self.child.wait();
        totals
    }
}

impl Drop for LoadChild {
    fn drop(&mut self) {
        if self.stdin.take().is_some() {
            // Not stopped: closing stdin ends it; a child that does not end soon is killed.
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// [`COMMAND`]'s body: the load of the config on stdin, until stdin closes.
/// Exit 0 after printing the totals, 2 if the load could not start.
pub fn serve() -> i32 {
    let mut input = BufReader::new(std::io::stdin());
    let mut line = String::new();
    if input.read_line(&mut line).is_err() {
        return 2;
    }
    let cfg: LoadConfig = match serde_json::from_str(&line) {
        Ok(c) => c,
        Err(e) => {
            println!("bad config: {e}");
            return 2;
        }
    };
    let load = match Load::start(&cfg) {
        Ok(l) => l,
        Err(e) => {
            println!("{e}");
            return 2;
        }
    };
    load.warm_up(Duration::from_secs(60));
    println!("{READY}");
    // Until the parent closes stdin: it stopped the load, or it is gone.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut input, &mut rest);
    let t = load.stop();
    println!("{}", serde_json::json!([t.churn_rounds, t.compactions]));
    0
}
