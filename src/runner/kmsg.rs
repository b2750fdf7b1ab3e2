//! Watches the kernel log (`/dev/kmsg`) across a case for splats (what a
//! splat is, [`super::klog`] says).
//!
//! Each watch opens its own `/dev/kmsg` descriptor and seeks to the end at
//! the case's start, so it reads exactly the records logged while the case
//! ran. With `--jobs` > 1 a splat is seen by every case that overlapped it:
//! rerun with `--jobs 1` to pin it on one.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

pub const DEV_KMSG: &str = "/dev/kmsg";

/// The mark in the fake warning the runner's own tests inject
/// (`tests/harness_runner.rs`).
pub const FIXTURE_MARK: &str = "(injected by tests/harness_runner.rs";

/// Whether a message is that fake warning and this run is not those tests'
/// (they set `UFFDTEST_FIXTURES`): then it is another process's test noise
/// on a shared machine, not the kernel's, and must fail nothing here.
pub fn is_foreign_fixture(msg: &str) -> bool {
    msg.contains(FIXTURE_MARK) && std::env::var_os("UFFDTEST_FIXTURES").is_none()
}

/// A reader positioned at the end of the kernel log when it was opened.
pub struct KmsgWatch {
    f: File,
}

impl KmsgWatch {
    /// Opens `/dev/kmsg` and skips what is already logged. Fails without the
    /// right to read the log (dmesg_restrict and no CAP_SYSLOG).
    pub fn open() -> io::Result<KmsgWatch> {
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(DEV_KMSG)?;
        f.seek(SeekFrom::End(0))?;
        Ok(KmsgWatch { f })
    }

    /// The messages logged since the last call (or since opening).
    pub fn read_new(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        // One read returns one record; a record is at most about 8 KiB.
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match self.f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Some(m) = record_message(&buf[..n]) {
                        out.push(m);
                    }
                }
                // Records were overwritten before we read them: go on from the oldest kept.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }
}

/// The message text of one `/dev/kmsg` record.
///
/// Accepted format: `prio,seq,usec,flags[,...];message` then optional
/// continuation lines ` KEY=value`; non-printable bytes come escaped as `\xNN`.
pub fn record_message(rec: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(rec);
    let (_, rest) = s.split_once(';')?;
    let msg = rest.split('\n').next().unwrap_or("");
    Some(msg.trim_end().to_string())
}

/// Writes one line to the kernel log (needs root), so console splats can be
/// attributed to the case that was starting.
pub fn announce(line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(DEV_KMSG)?;
    f.write_all(format!("{}\n", line.replace('\n', " ")).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_tests_fake_warning_fails_nothing_outside_them() {
        if std::env::var_os("UFFDTEST_FIXTURES").is_some() {
            println!("SKIP: UFFDTEST_FIXTURES is set in this process");
            return;
        }
        let fake = "WARNING: CPU: 0 PID: 0 at uffdtest-harness-fixture (injected by tests/harness_runner.rs, not a kernel bug)";
        assert!(crate::runner::klog::is_splat(fake), "it is shaped like a WARN");
        assert!(is_foreign_fixture(fake));
        assert!(!is_foreign_fixture(
            "WARNING: CPU: 1 PID: 42 at mm/userfaultfd.c:1230 mfill_atomic+0x1/0x2"
        ));
    }

    #[test]
    fn records_are_split_from_their_header() {
        assert_eq!(
            record_message(b"4,1234,5678,-;WARNING: CPU: 0 PID: 1 at x\n SUBSYSTEM=mm\n").as_deref(),
            Some("WARNING: CPU: 0 PID: 1 at x")
        );
        assert_eq!(record_message(b"garbage"), None);
    }
}
