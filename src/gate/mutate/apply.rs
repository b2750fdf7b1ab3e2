//! Put one mutant into a clean kernel tree, and take it out again on every way out: a normal return, an error, a
//! panic (the guard's `Drop`), SIGINT/SIGTERM/SIGHUP (a signal handler that only makes async-signal-safe system
//! calls), and even SIGKILL or a power cut (a journal in the tree that the next `mutate` replays first).
//!
//! "Clean" is git's answer: the tree must be a git work tree with no modified tracked file. Debian's
//! linux-source-6.12 is not one; make it one once with
//! `git init -q && git add -A -f && git commit -qm pristine` (`-f`: Debian's top-level `.gitignore` ignores `/*`).

use crate::gate::build;
use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

/// The journal: which file holds a mutant, and its original bytes beside it. Dot files at the top are ignored by
/// the kernel's `.gitignore` and by `git status --untracked-files=no`.
pub const JOURNAL: &str = ".uffdtest-mutant";
const JOURNAL_ORIG: &str = ".uffdtest-mutant.orig";

/// Why a tree cannot take mutants; all are usage errors (exit 2).
#[derive(Debug)]
pub enum TreeError {
    NotKernelTree(build::BuildError),
    NotGit { tree: PathBuf, why: String },
    Dirty { tree: PathBuf, files: Vec<String> },
    Io { what: String, err: std::io::Error },
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::NotKernelTree(e) => write!(f, "{e}"),
            TreeError::NotGit { tree, why } => write!(
                f,
                "{} is not a git work tree ({why}); mutate uses git to know the tree is clean. Make it one once: \
                 cd {} && git init -q && git add -A -f && git commit -qm pristine",
                tree.display(),
                tree.display()
            ),
            TreeError::Dirty { tree, files } => write!(
                f,
                "{} has uncommitted changes to {} tracked file(s) ({}); mutate only breaks a clean tree: commit or \
                 `git stash` them, or `git checkout -- FILE`",
                tree.display(),
                files.len(),
                files.join(", ")
            ),
            TreeError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for TreeError {}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TreeError {
    let what = what.into();
    move |err| TreeError::Io { what, err }
}

/// `git -C tree args`: its stdout, or the tree is not usable under git, for what git said on stderr (`silent`
/// when it said nothing).
fn git(tree: &Path, args: &[&str], silent: &str) -> Result<String, TreeError> {
    let not_git = |why: String| TreeError::NotGit {
        tree: tree.to_path_buf(),
        why,
    };
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(args)
        .output()
        .map_err(|e| not_git(format!("cannot run git: {e}")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(not_git(if err.is_empty() { silent.into() } else { err }))
}

/// The tracked files git sees modified (staged or not), as `git status --porcelain` names them.
pub fn dirty_files(tree: &Path) -> Result<Vec<String>, TreeError> {
    git(tree, &["rev-parse", "--verify", "-q", "HEAD"], "it has no commit")?;
    let status = git(tree, &["status", "--porcelain", "--untracked-files=no"], "")?;
    Ok(status.lines().filter_map(|l| l.get(3..)).map(str::to_string).collect())
}

/// Replay a journal a killed run left behind; returns the file it put back.
pub fn recover(tree: &Path) -> Result<Option<String>, TreeError> {
    let journal = tree.join(JOURNAL);
    let Ok(file) = std::fs::read_to_string(&journal) else {
        return Ok(None);
    };
    let file = file.trim_end_matches('\n').to_string();
    let orig = tree.join(JOURNAL_ORIG);
    let bytes = std::fs::read(&orig).map_err(io(format!(
        "{} names {file} but its original {} is unreadable",
        journal.display(),
        orig.display()
    )))?;
    std::fs::write(tree.join(&file), bytes).map_err(io(format!("restore {file}")))?;
    let _ = std::fs::remove_file(&orig);
    std::fs::remove_file(&journal).map_err(io(format!("remove {}", journal.display())))?;
    Ok(Some(file))
}

/// A kernel tree, under git, clean once any journal is replayed. Returns what the journal restored.
pub fn check_tree(tree: &Path) -> Result<Option<String>, TreeError> {
    build::check_tree(tree).map_err(TreeError::NotKernelTree)?;
    let recovered = recover(tree)?;
    let files = dirty_files(tree)?;
    if !files.is_empty() {
        return Err(TreeError::Dirty {
            tree: tree.to_path_buf(),
            files,
        });
    }
    Ok(recovered)
}

/// What the signal handler needs to put one file back, prepared before the mutant is written.
struct RestoreJob {
    path: CString,
    bytes: Vec<u8>,
    journal: [CString; 2],
}

static PENDING: AtomicPtr<RestoreJob> = AtomicPtr::new(std::ptr::null_mut());
static IN_HANDLER: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

fn cstring(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

/// Put the original back with write(2), then die of the same signal with its default action, so the shell sees
/// 130 for Ctrl-C. Only async-signal-safe calls: open, write, close, unlink, sigaction, raise.
extern "C" fn on_signal(sig: libc::c_int) {
    IN_HANDLER.store(true, Ordering::SeqCst);
    let job = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    // SAFETY: a non-null pointer came from Box::into_raw in `arm` and is freed only by `disarm` after it swapped
    // the pointer out itself and saw no handler running; this handler never returns, so the job outlives its use.
    unsafe {
        if let Some(job) = job.as_ref() {
            let fd = libc::open(job.path.as_ptr(), libc::O_WRONLY | libc::O_TRUNC);
            if fd >= 0 {
                let mut done = 0;
                while done < job.bytes.len() {
                    let n = libc::write(fd, job.bytes[done..].as_ptr().cast(), job.bytes.len() - done);
                    if n <= 0 {
                        break;
                    }
                    done += n as usize;
                }
                libc::close(fd);
                if done == job.bytes.len() {
                    for j in &job.journal {
                        libc::unlink(j.as_ptr());
                    }
                }
            }
        }
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn install_handlers() {
    INSTALL.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: `on_signal` is an extern "C" fn that makes only async-signal-safe calls.
            unsafe {
                libc::signal(sig, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
            }
        }
    });
}

fn arm(job: RestoreJob) {
    install_handlers();
    let old = PENDING.swap(Box::into_raw(Box::new(job)), Ordering::SeqCst);
    assert!(old.is_null(), "one mutant at a time");
}

fn disarm() {
    let job = PENDING.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if IN_HANDLER.load(Ordering::SeqCst) {
        // The handler may be using its job; it is about to end the process.
        loop {
            std::thread::park();
        }
    }
    if !job.is_null() {
        // SAFETY: the pointer came from Box::into_raw in `arm`, and the swap made this its only owner.
        drop(unsafe { Box::from_raw(job) });
    }
}

/// Why a mutant could not be applied (the tree is left as it was).
#[derive(Debug)]
pub enum ApplyError {
    /// The text is no longer there exactly once: the tree is not the one the catalogue was checked against.
    Text {
        file: String,
        found: usize,
    },
    Io(TreeError),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Text { file, found } => {
                write!(f, "the find text occurs {found} time(s) in {file}, not exactly once")
            }
            ApplyError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// A mutant in the tree. Dropping it (or [`Applied::restore`]) puts the original bytes back.
#[must_use = "the mutant is taken out again when this is dropped"]
pub struct Applied {
    tree: PathBuf,
    file: String,
    original: Vec<u8>,
    restored: bool,
}

/// Write the journal, arm the signal handler, then the mutant: a kill at any point leaves a way back.
pub fn apply(tree: &Path, file: &str, find: &str, replace: &str) -> Result<Applied, ApplyError> {
    let path = tree.join(file);
    let original = std::fs::read(&path).map_err(|e| ApplyError::Io(io(format!("read {file}"))(e)))?;
    let text = String::from_utf8_lossy(&original);
    let found = text.matches(find).count();
    if found != 1 {
        return Err(ApplyError::Text {
            file: file.into(),
            found,
        });
    }
    let mutated = text.replacen(find, replace, 1);
    let journal = tree.join(JOURNAL);
    let orig = tree.join(JOURNAL_ORIG);
    let write =
        |p: &Path, b: &[u8]| std::fs::write(p, b).map_err(|e| ApplyError::Io(io(format!("write {}", p.display()))(e)));
    write(&orig, &original)?;
    write(&journal, format!("{file}\n").as_bytes())?;
    arm(RestoreJob {
        path: cstring(&path),
        bytes: original.clone(),
        journal: [cstring(&journal), cstring(&orig)],
    });
    let applied = Applied {
        tree: tree.to_path_buf(),
        file: file.into(),
        original,
        restored: false,
    };
    write(&path, mutated.as_bytes())?;
    Ok(applied)
}

impl Applied {
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Put the original back now and say whether that worked.
    pub fn restore(mut self) -> Result<(), TreeError> {
        self.put_back()
    }

    fn put_back(&mut self) -> Result<(), TreeError> {
        if self.restored {
            return Ok(());
        }
        std::fs::write(self.tree.join(&self.file), &self.original).map_err(io(format!("restore {}", self.file)))?;
        self.restored = true;
        disarm();
        for j in [JOURNAL, JOURNAL_ORIG] {
            let _ = std::fs::remove_file(self.tree.join(j));
        }
        Ok(())
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Err(e) = self.put_back() {
            eprintln!(
                "uffdtest mutate: could not take the mutant out of {}: {e}; the next `uffdtest mutate` restores it \
                 from {}",
                self.file,
                self.tree.join(JOURNAL_ORIG).display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serial_test::serial;

    /// A scratch tree with one file to mutate, and that file's bytes as made; removed on drop.
    struct Tree {
        dir: PathBuf,
        before: Vec<u8>,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let dir = std::env::temp_dir().join(format!("uffdtest-apply-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("mm")).unwrap();
            let before = b"int f(void)\n{\n\treturn -EINVAL;\n}\n".to_vec();
            std::fs::write(dir.join("mm/u.c"), &before).unwrap();
            Tree { dir, before }
        }

        fn file(&self) -> Vec<u8> {
            std::fs::read(self.dir.join("mm/u.c")).unwrap()
        }

        #[track_caller]
        fn assert_original(&self) {
            assert_eq!(self.file(), self.before);
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    #[serial(mutate_apply)]
    fn a_dropped_guard_puts_the_original_back_and_removes_the_journal() {
        let t = Tree::new("drop");
        let d = &t.dir;
        {
            let a = apply(d, "mm/u.c", "return -EINVAL;", "return 0;").unwrap();
            assert_eq!(a.file(), "mm/u.c");
            assert!(String::from_utf8(t.file()).unwrap().contains("return 0;"));
            assert_eq!(std::fs::read_to_string(d.join(JOURNAL)).unwrap(), "mm/u.c\n");
            assert_eq!(std::fs::read(d.join(JOURNAL_ORIG)).unwrap(), t.before);
        }
        t.assert_original();
        assert!(!d.join(JOURNAL).exists() && !d.join(JOURNAL_ORIG).exists());
    }

    #[test]
    #[serial(mutate_apply)]
    fn a_panic_while_the_mutant_is_in_still_restores() {
        let t = Tree::new("panic");
        let d = t.dir.clone();
        let r = std::panic::catch_unwind(move || {
            let _a = apply(&d, "mm/u.c", "-EINVAL", "-EPERM").unwrap();
            panic!("the build step blew up");
        });
        assert!(r.is_err());
        t.assert_original();
    }

    #[test]
    #[serial(mutate_apply)]
    fn a_journal_left_by_a_killed_run_is_replayed() {
        let t = Tree::new("journal");
        let a = apply(&t.dir, "mm/u.c", "return -EINVAL;", "return 0;").unwrap();
        // What SIGKILL leaves: the mutant and the journal, no Drop.
        disarm();
        std::mem::forget(a);
        assert_ne!(t.file(), t.before);
        assert_eq!(recover(&t.dir).unwrap().as_deref(), Some("mm/u.c"));
        t.assert_original();
        assert_eq!(recover(&t.dir).unwrap(), None);
    }

    #[test]
    #[serial(mutate_apply)]
    fn text_that_is_not_there_once_changes_nothing() {
        let t = Tree::new("text");
        let e = apply(&t.dir, "mm/u.c", "return 1;", "return 0;").err().unwrap();
        assert!(matches!(e, ApplyError::Text { found: 0, .. }), "{e}");
        t.assert_original();
        assert!(!t.dir.join(JOURNAL).exists());
    }

    #[test]
    fn a_tree_without_git_is_refused_with_the_command_that_fixes_it() {
        let t = Tree::new("nogit");
        let e = dirty_files(&t.dir).unwrap_err().to_string();
        assert!(e.contains("git init -q && git add -A -f"), "{e}");
    }
}
