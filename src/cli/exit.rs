//! Every way a subcommand can end, and the process exit code each one is.
//!
//! The numbers are contracts with the callers: kselftest's (0 pass, 1 fail,
//! 4 all skipped), a shell's for SIGINT (130), and `git bisect run`'s (125
//! skip this commit, above 127 abort the bisection).

use crate::gate::bisect::Verdict;
use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for ran and passed.
    Ok,
    /// A case failed, the kernel splatted, or a check found a problem.
    Failure,
    /// Nothing could be judged: a usage error, missing infrastructure, nothing selected.
    CouldNotRun,
    /// Every case ran and skipped (kselftest's KSFT_SKIP).
    AllSkipped,
    /// `git bisect run`: this commit cannot be tested.
    BisectSkip,
    /// Stopped by SIGINT or SIGTERM.
    Interrupted,
    /// `git bisect run`: stop the bisection, the same would happen at every commit.
    BisectAbort,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::CouldNotRun => 2,
            Exit::AllSkipped => 4,
            Exit::BisectSkip => 125,
            Exit::Interrupted => 130,
            Exit::BisectAbort => 255,
        }
    }

    /// The code a library report gives (runner, compare, merge), read back.
    /// Those reports speak kselftest's numbers; any other is a failure.
    pub fn from_report_code(code: i32) -> Exit {
        [Exit::Ok, Exit::Failure, Exit::AllSkipped, Exit::Interrupted]
            .into_iter()
            .find(|e| i32::from(e.code()) == code)
            .unwrap_or(Exit::Failure)
    }

    /// This exit, with why on stderr as `who: why`.
    pub fn because(self, who: &str, why: impl std::fmt::Display) -> Exit {
        eprintln!("{who}: {why}");
        self
    }

    /// Pass or fail.
    pub fn failed_if(failed: bool) -> Exit {
        if failed { Exit::Failure } else { Exit::Ok }
    }
}

impl From<&Verdict> for Exit {
    fn from(v: &Verdict) -> Exit {
        match v {
            Verdict::Good { .. } => Exit::Ok,
            Verdict::Bad { .. } => Exit::Failure,
            Verdict::Untestable(_) => Exit::BisectSkip,
            Verdict::Abort(_) => Exit::BisectAbort,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_codes_read_back_as_themselves() {
        for code in [0, 1, 4, 130] {
            assert_eq!(i32::from(Exit::from_report_code(code).code()), code);
        }
        assert_eq!(Exit::from_report_code(3), Exit::Failure);
    }

    #[test]
    fn verdicts_speak_git_bisect_run() {
        let code = |v: Verdict| Exit::from(&v).code();
        assert_eq!(code(Verdict::Good { passed: 1, skipped: 0 }), 0);
        assert_eq!(
            code(Verdict::Bad {
                failed: vec!["c".into()]
            }),
            1
        );
        assert_eq!(code(Verdict::Untestable("no boot".into())), 125);
        assert!(code(Verdict::Abort("no tree".into())) > 127);
    }
}
