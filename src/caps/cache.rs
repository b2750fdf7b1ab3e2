//! Probe answers shared by every process of one run.
//!
//! Each case runs in a process of its own, so a probe kept in a `LazyLock`
//! ran again in every case: the guest_memfd registration probe alone
//! creates two KVM VMs (7 ms) in each of some 230 cases that then skip.
//! The runner names a directory for the run in [`RUN_DIR_ENV`]; the first
//! process that needs a probe runs it and leaves its answer there, every
//! later one reads it back. Without the variable (plain `cargo test`, a
//! case run by hand) each process probes for itself, as before.
//!
//! The answers are facts of the kernel and of the runner's credentials,
//! which all cases of a run share. The file format is private: raw bits and
//! errno numbers, so an answer reads back exactly as it was probed.

use super::{Behaviour, Caps, Registration, Unsupported};
use crate::uffd::{Features, Ioctls, OpenError};
use nix::errno::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The run's directory, set by the runner for every case.
pub const RUN_DIR_ENV: &str = "UFFDTEST_RUN_DIR";

/// A probe answer and its file form.
pub(super) trait Shared: Sized {
    type Wire: Serialize + DeserializeOwned;
    fn to_wire(&self) -> Self::Wire;
    fn from_wire(w: Self::Wire) -> Self;
}

/// `probe()`'s answer, from the run's directory if a process of this run
/// already probed `name`, else probed here and left there for the others.
pub(super) fn shared<T: Shared>(name: &str, probe: impl FnOnce() -> T) -> T {
    shared_in(std::env::var_os(RUN_DIR_ENV).map(PathBuf::from), name, probe)
}

fn shared_in<T: Shared>(dir: Option<PathBuf>, name: &str, probe: impl FnOnce() -> T) -> T {
    let Some(path) = dir.map(|d| d.join(format!("probe-{name}.json"))) else {
        return probe();
    };
    if let Some(w) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
        return T::from_wire(w);
    }
    let answer = probe();
    // Written whole then renamed: a reader sees the old state or all of it.
    // Two first processes may both probe and write; the answers are equal.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    if let Ok(bytes) = serde_json::to_vec(&answer.to_wire())
        && std::fs::write(&tmp, bytes).is_ok()
        && std::fs::rename(&tmp, &path).is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
    answer
}

fn errno(e: Errno) -> i32 {
    e as i32
}

fn from_errno(n: i32) -> Errno {
    Errno::from_raw(n)
}

#[derive(Serialize, Deserialize)]
pub(super) enum OpenWire {
    Ok,
    Open(i32),
    Api(i32),
}

fn open_wire(r: &Result<(), OpenError>) -> OpenWire {
    match r {
        Ok(()) => OpenWire::Ok,
        Err(OpenError::Open(e)) => OpenWire::Open(errno(*e)),
        Err(OpenError::Api(e)) => OpenWire::Api(errno(*e)),
    }
}

fn open_result(w: OpenWire) -> Result<(), OpenError> {
    match w {
        OpenWire::Ok => Ok(()),
        OpenWire::Open(n) => Err(OpenError::Open(from_errno(n))),
        OpenWire::Api(n) => Err(OpenError::Api(from_errno(n))),
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct CapsWire {
    release: String,
    root: bool,
    syscall: OpenWire,
    syscall_full: OpenWire,
    dev_userfaultfd: Option<i32>,
    features: u64,
    features_full: Option<u64>,
    api_ioctls: u64,
    event_fork_allowed: bool,
    unprivileged_userfaultfd: Option<u32>,
    page_size: usize,
    huge_page_size: Option<usize>,
    hugepages_free: usize,
    nr_hugepages: Option<usize>,
    thp: Option<String>,
    pmd_size: Option<usize>,
    thp_sizes: Vec<usize>,
    gup_test: bool,
    swap: bool,
}

impl Shared for Caps {
    type Wire = CapsWire;

    fn to_wire(&self) -> CapsWire {
        CapsWire {
            release: self.release.clone(),
            root: self.root,
            syscall: open_wire(&self.syscall),
            syscall_full: open_wire(&self.syscall_full),
            dev_userfaultfd: self.dev_userfaultfd.err().map(errno),
            features: self.features.bits(),
            features_full: self.features_full.map(|f| f.bits()),
            api_ioctls: self.api_ioctls.bits(),
            event_fork_allowed: self.event_fork_allowed,
            unprivileged_userfaultfd: self.unprivileged_userfaultfd,
            page_size: self.page_size,
            huge_page_size: self.huge_page_size,
            hugepages_free: self.hugepages_free,
            nr_hugepages: self.nr_hugepages,
            thp: self.thp.clone(),
            pmd_size: self.pmd_size,
            thp_sizes: self.thp_sizes.clone(),
            gup_test: self.gup_test,
            swap: self.swap,
        }
    }

    fn from_wire(w: CapsWire) -> Caps {
        Caps {
            release: w.release,
            root: w.root,
            syscall: open_result(w.syscall),
            syscall_full: open_result(w.syscall_full),
            dev_userfaultfd: w.dev_userfaultfd.map_or(Ok(()), |n| Err(from_errno(n))),
            features: Features::from_bits_retain(w.features),
            features_full: w.features_full.map(Features::from_bits_retain),
            api_ioctls: Ioctls::from_bits_retain(w.api_ioctls),
            event_fork_allowed: w.event_fork_allowed,
            unprivileged_userfaultfd: w.unprivileged_userfaultfd,
            page_size: w.page_size,
            huge_page_size: w.huge_page_size,
            hugepages_free: w.hugepages_free,
            nr_hugepages: w.nr_hugepages,
            thp: w.thp,
            pmd_size: w.pmd_size,
            thp_sizes: w.thp_sizes,
            gup_test: w.gup_test,
            swap: w.swap,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) enum RegistrationWire {
    Granted(u64),
    Refused(i32),
    Unprobed(String),
}

impl Shared for Registration {
    type Wire = RegistrationWire;

    fn to_wire(&self) -> RegistrationWire {
        match self {
            Registration::Granted(i) => RegistrationWire::Granted(i.bits()),
            Registration::Refused(e) => RegistrationWire::Refused(errno(*e)),
            Registration::Unprobed(why) => RegistrationWire::Unprobed(why.clone()),
        }
    }

    fn from_wire(w: RegistrationWire) -> Registration {
        match w {
            RegistrationWire::Granted(bits) => Registration::Granted(Ioctls::from_bits_retain(bits)),
            RegistrationWire::Refused(n) => Registration::Refused(from_errno(n)),
            RegistrationWire::Unprobed(why) => Registration::Unprobed(why),
        }
    }
}

/// A behaviour probe's answer. Its errors are a missing feature (kept
/// exactly) or a probe that could not set itself up (kept as its reason).
#[derive(Serialize, Deserialize)]
pub(super) enum BehaviourWire {
    Answer(bool),
    MissingFeatures(u64),
    Missing(Behaviour),
    Unprobed(String),
}

impl Shared for Result<bool, Unsupported> {
    type Wire = BehaviourWire;

    fn to_wire(&self) -> BehaviourWire {
        match self {
            Ok(b) => BehaviourWire::Answer(*b),
            Err(Unsupported::MissingFeatures { missing, mem: None }) => BehaviourWire::MissingFeatures(missing.bits()),
            Err(Unsupported::Missing(b)) => BehaviourWire::Missing(*b),
            Err(e) => BehaviourWire::Unprobed(e.to_string()),
        }
    }

    fn from_wire(w: BehaviourWire) -> Self {
        match w {
            BehaviourWire::Answer(b) => Ok(b),
            BehaviourWire::MissingFeatures(bits) => Err(Unsupported::MissingFeatures {
                missing: Features::from_bits_retain(bits),
                mem: None,
            }),
            BehaviourWire::Missing(b) => Err(Unsupported::Missing(b)),
            BehaviourWire::Unprobed(why) => Err(Unsupported::Unprobed(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each answer reads back as it was written (Debug shows every field).
    fn round_trip<T: Shared + std::fmt::Debug>(v: &T) {
        let json = serde_json::to_string(&v.to_wire()).unwrap();
        let back = T::from_wire(serde_json::from_str(&json).unwrap());
        assert_eq!(format!("{back:?}"), format!("{v:?}"));
    }

    #[test]
    fn the_running_kernels_answers_survive_the_file() {
        round_trip(&super::super::probe());
        for b in Behaviour::ALL {
            round_trip(super::super::behaviour(b));
        }
        round_trip(&Registration::Refused(Errno::EINVAL));
        round_trip(&Registration::Granted(Ioctls::from_bits_retain(0x1c)));
        round_trip(&Registration::Unprobed("no /dev/kvm".into()));
        let missing = Features::MINOR_SHMEM | Features::WP_ASYNC;
        round_trip::<Result<bool, Unsupported>>(&Err(Unsupported::MissingFeatures { missing, mem: None }));
    }

    #[test]
    fn a_second_process_reads_the_first_ones_answer() {
        let dir = std::env::temp_dir().join(format!("uffdtest-probe-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = shared_in(Some(dir.clone()), "test", || Registration::Refused(Errno::EBUSY));
        let second = shared_in(Some(dir.clone()), "test", || -> Registration { panic!("probed twice") });
        assert_eq!(format!("{first:?}"), format!("{second:?}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
