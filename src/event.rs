//! Decoded `uffd_msg`s: one enum arm per UFFD_EVENT_*.

use crate::sys;
use crate::sys::uapi_flags;
use crate::uffd::Uffd;
use std::os::fd::{FromRawFd, OwnedFd};

uapi_flags! {
    /// `uffd_msg.arg.pagefault.flags`.
    PagefaultFlags {
        WRITE = sys::UFFD_PAGEFAULT_FLAG_WRITE;
        WP = sys::UFFD_PAGEFAULT_FLAG_WP;
        MINOR = sys::UFFD_PAGEFAULT_FLAG_MINOR;
    }
}

/// One message read from a uffd.
#[derive(Debug)]
pub enum Event {
    /// A thread faulted on a registered range and waits for resolution.
    /// `ptid` is 0 unless UFFD_FEATURE_THREAD_ID was asked for.
    Pagefault {
        flags: PagefaultFlags,
        address: u64,
        ptid: u32,
    },
    /// The process forked (UFFD_FEATURE_EVENT_FORK); the child's uffd.
    Fork { uffd: Uffd },
    /// mremap() moved a registered range (UFFD_FEATURE_EVENT_REMAP).
    Remap { from: u64, to: u64, len: u64 },
    /// MADV_DONTNEED/MADV_REMOVE dropped pages (UFFD_FEATURE_EVENT_REMOVE).
    Remove { start: u64, end: u64 },
    /// munmap() or a shrinking mremap() (UFFD_FEATURE_EVENT_UNMAP).
    Unmap { start: u64, end: u64 },
    /// An event number this crate does not know: a kernel bug or a new UAPI.
    Unknown { event: u8, raw: [u8; 32] },
}

impl Event {
    /// Decodes a message; a FORK message's fd becomes owned here.
    pub fn decode(msg: &sys::uffd_msg) -> Event {
        // SAFETY: each arm reads the union member the event number selects;
        // all members are plain integers, so any bytes are valid.
        unsafe {
            match msg.event {
                sys::UFFD_EVENT_PAGEFAULT => {
                    let pf = msg.arg.pagefault;
                    Event::Pagefault {
                        flags: PagefaultFlags::from_bits_retain(pf.flags),
                        address: pf.address,
                        ptid: pf.ptid,
                    }
                }
                sys::UFFD_EVENT_FORK => Event::Fork {
                    uffd: Uffd::from_owned(OwnedFd::from_raw_fd(msg.arg.fork.ufd as i32)),
                },
                sys::UFFD_EVENT_REMAP => {
                    let r = msg.arg.remap;
                    Event::Remap {
                        from: r.from,
                        to: r.to,
                        len: r.len,
                    }
                }
                sys::UFFD_EVENT_REMOVE => {
                    let r = msg.arg.remove;
                    Event::Remove {
                        start: r.start,
                        end: r.end,
                    }
                }
                sys::UFFD_EVENT_UNMAP => {
                    let r = msg.arg.remove;
                    Event::Unmap {
                        start: r.start,
                        end: r.end,
                    }
                }
                event => Event::Unknown {
                    event,
                    raw: std::mem::transmute::<sys::uffd_msg, [u8; 32]>(*msg),
                },
            }
        }
    }

    /// The event's name as the UAPI spells it, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Pagefault { .. } => "UFFD_EVENT_PAGEFAULT",
            Event::Fork { .. } => "UFFD_EVENT_FORK",
            Event::Remap { .. } => "UFFD_EVENT_REMAP",
            Event::Remove { .. } => "UFFD_EVENT_REMOVE",
            Event::Unmap { .. } => "UFFD_EVENT_UNMAP",
            Event::Unknown { .. } => "unknown",
        }
    }
}
