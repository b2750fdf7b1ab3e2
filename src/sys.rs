//! The userfaultfd UAPI (`include/uapi/linux/userfaultfd.h`), name for name.
//!
//! Written out by hand rather than taken from the host's libc headers:
//! Debian 12 ships 6.1 headers, which lack UFFDIO_MOVE, UFFDIO_POISON and the
//! newer feature bits. Layouts are pinned at compile time below and request
//! codes in the unit tests, so a wrong binding fails the build, not a run.
#![allow(non_camel_case_types)]

use nix::{ioctl_read, ioctl_readwrite, ioctl_write_int_bad, request_code_none};

/// `u64` flag sets of the UAPI, each with the derives they all take: `Name { FLAG = value; ... }`.
macro_rules! uapi_flags {
    ($($(#[$doc:meta])* $name:ident { $($flag:ident = $value:expr;)+ })+) => {
        $(::bitflags::bitflags! {
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
            pub struct $name: u64 {
                $(const $flag = $value;)+
            }
        })+
    };
}
pub(crate) use uapi_flags;

/// `UFFD_API`: the only API number the kernel accepts in `uffdio_api.api`.
pub const UFFD_API: u64 = 0xAA;
/// ioctl type byte shared by every UFFDIO_* request.
pub const UFFDIO: u8 = 0xAA;
/// ioctl type byte of `/dev/userfaultfd`.
pub const USERFAULTFD_IOC: u8 = 0xAA;

/// Flag of userfaultfd(2) / USERFAULTFD_IOC_NEW: trap user-mode faults only,
/// which any user may ask for (5.11).
pub const UFFD_USER_MODE_ONLY: i32 = 1;

// Events (`uffd_msg.event`). They start at 0x12 on purpose, "to be more
// strict against bugs".
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
pub const UFFD_EVENT_FORK: u8 = 0x13;
pub const UFFD_EVENT_REMAP: u8 = 0x14;
pub const UFFD_EVENT_REMOVE: u8 = 0x15;
pub const UFFD_EVENT_UNMAP: u8 = 0x16;

// `uffd_msg.arg.pagefault.flags`.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;
pub const UFFD_PAGEFAULT_FLAG_WP: u64 = 1 << 1;
/// 5.13.
pub const UFFD_PAGEFAULT_FLAG_MINOR: u64 = 1 << 2;

// Feature bits of `uffdio_api.features`.
pub const UFFD_FEATURE_PAGEFAULT_FLAG_WP: u64 = 1 << 0;
/// Needs CAP_SYS_PTRACE.
pub const UFFD_FEATURE_EVENT_FORK: u64 = 1 << 1;
pub const UFFD_FEATURE_EVENT_REMAP: u64 = 1 << 2;
pub const UFFD_FEATURE_EVENT_REMOVE: u64 = 1 << 3;
pub const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
pub const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
pub const UFFD_FEATURE_EVENT_UNMAP: u64 = 1 << 6;
pub const UFFD_FEATURE_SIGBUS: u64 = 1 << 7;
pub const UFFD_FEATURE_THREAD_ID: u64 = 1 << 8;
pub const UFFD_FEATURE_MINOR_HUGETLBFS: u64 = 1 << 9;
pub const UFFD_FEATURE_MINOR_SHMEM: u64 = 1 << 10;
pub const UFFD_FEATURE_EXACT_ADDRESS: u64 = 1 << 11;
pub const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// Brings UFFDIO_POISON (6.6).
pub const UFFD_FEATURE_POISON: u64 = 1 << 14;
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
/// Brings UFFDIO_MOVE (6.8).
pub const UFFD_FEATURE_MOVE: u64 = 1 << 16;

// ioctl numbers; `_UFFDIO_*` are also the bit numbers of the ioctls masks.
pub const _UFFDIO_REGISTER: u64 = 0x00;
pub const _UFFDIO_UNREGISTER: u64 = 0x01;
pub const _UFFDIO_WAKE: u64 = 0x02;
pub const _UFFDIO_COPY: u64 = 0x03;
pub const _UFFDIO_ZEROPAGE: u64 = 0x04;
pub const _UFFDIO_MOVE: u64 = 0x05;
pub const _UFFDIO_WRITEPROTECT: u64 = 0x06;
pub const _UFFDIO_CONTINUE: u64 = 0x07;
pub const _UFFDIO_POISON: u64 = 0x08;
pub const _UFFDIO_API: u64 = 0x3F;
/// `USERFAULTFD_IOC_NEW`'s number under `USERFAULTFD_IOC`.
pub const _USERFAULTFD_IOC_NEW: u64 = 0x00;

/// Ioctls every initialised uffd offers (`UFFDIO_API` reports these).
pub const UFFD_API_IOCTLS: u64 = 1 << _UFFDIO_REGISTER | 1 << _UFFDIO_UNREGISTER | 1 << _UFFDIO_API;
/// Range ioctls a registration may grant.
pub const UFFD_API_RANGE_IOCTLS: u64 = 1 << _UFFDIO_WAKE
    | 1 << _UFFDIO_COPY
    | 1 << _UFFDIO_ZEROPAGE
    | 1 << _UFFDIO_MOVE
    | 1 << _UFFDIO_WRITEPROTECT
    | 1 << _UFFDIO_CONTINUE
    | 1 << _UFFDIO_POISON;
/// The range ioctls of hugetlb: everything but ZEROPAGE (and MOVE).
pub const UFFD_API_RANGE_IOCTLS_BASIC: u64 =
    1 << _UFFDIO_WAKE | 1 << _UFFDIO_COPY | 1 << _UFFDIO_WRITEPROTECT | 1 << _UFFDIO_CONTINUE | 1 << _UFFDIO_POISON;

// Register modes.
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1 << 0;
/// 5.7.
pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
/// 5.13.
pub const UFFDIO_REGISTER_MODE_MINOR: u64 = 1 << 2;
pub const UFFD_API_REGISTER_MODES: u64 =
    UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR;

// Per-ioctl modes.
pub const UFFDIO_COPY_MODE_DONTWAKE: u64 = 1 << 0;
pub const UFFDIO_COPY_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_ZEROPAGE_MODE_DONTWAKE: u64 = 1 << 0;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
pub const UFFDIO_WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
pub const UFFDIO_CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
/// 6.4.
pub const UFFDIO_CONTINUE_MODE_WP: u64 = 1 << 1;
pub const UFFDIO_POISON_MODE_DONTWAKE: u64 = 1 << 0;
pub const UFFDIO_MOVE_MODE_DONTWAKE: u64 = 1 << 0;
pub const UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES: u64 = 1 << 1;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_api {
    pub api: u64,
    pub features: u64,
    /// Out: the ioctls this fd offers.
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_range {
    pub start: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_register {
    pub range: uffdio_range,
    pub mode: u64,
    /// Out: the range ioctls the registration grants.
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_copy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    /// Out: bytes copied, or a negative errno.
    pub copy: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_zeropage {
    pub range: uffdio_range,
    pub mode: u64,
    /// Out: bytes zeroed, or a negative errno.
    pub zeropage: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_writeprotect {
    pub range: uffdio_range,
    pub mode: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_continue {
    pub range: uffdio_range,
    pub mode: u64,
    /// Out: bytes mapped, or a negative errno.
    pub mapped: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_poison {
    pub range: uffdio_range,
    pub mode: u64,
    /// Out: bytes poisoned, or a negative errno.
    pub updated: i64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffdio_move {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    /// Out: bytes moved, or a negative errno.
    pub r#move: i64,
}

#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffd_msg_pagefault {
    pub flags: u64,
    pub address: u64,
    /// `feat.ptid`, filled with UFFD_FEATURE_THREAD_ID.
    pub ptid: u32,
}

#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffd_msg_fork {
    pub ufd: u32,
}

#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffd_msg_remap {
    pub from: u64,
    pub to: u64,
    pub len: u64,
}

/// Also the payload of UFFD_EVENT_UNMAP.
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct uffd_msg_remove {
    pub start: u64,
    pub end: u64,
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
pub union uffd_msg_arg {
    pub pagefault: uffd_msg_pagefault,
    pub fork: uffd_msg_fork,
    pub remap: uffd_msg_remap,
    pub remove: uffd_msg_remove,
    pub reserved: [u64; 3],
}

/// What read(2) on a uffd returns, one per event.
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct uffd_msg {
    pub event: u8,
    pub reserved1: u8,
    pub reserved2: u16,
    pub reserved3: u32,
    pub arg: uffd_msg_arg,
}

impl Default for uffd_msg {
    fn default() -> Self {
        uffd_msg {
            event: 0,
            reserved1: 0,
            reserved2: 0,
            reserved3: 0,
            arg: uffd_msg_arg { reserved: [0; 3] },
        }
    }
}

ioctl_readwrite!(uffdio_register, UFFDIO, _UFFDIO_REGISTER, uffdio_register);
// The header declares these two _IOR although the kernel only reads them.
ioctl_read!(uffdio_unregister, UFFDIO, _UFFDIO_UNREGISTER, uffdio_range);
ioctl_read!(uffdio_wake, UFFDIO, _UFFDIO_WAKE, uffdio_range);
ioctl_readwrite!(uffdio_copy, UFFDIO, _UFFDIO_COPY, uffdio_copy);
ioctl_readwrite!(uffdio_zeropage, UFFDIO, _UFFDIO_ZEROPAGE, uffdio_zeropage);
ioctl_readwrite!(uffdio_move, UFFDIO, _UFFDIO_MOVE, uffdio_move);
ioctl_readwrite!(uffdio_writeprotect, UFFDIO, _UFFDIO_WRITEPROTECT, uffdio_writeprotect);
ioctl_readwrite!(uffdio_continue, UFFDIO, _UFFDIO_CONTINUE, uffdio_continue);
ioctl_readwrite!(uffdio_poison, UFFDIO, _UFFDIO_POISON, uffdio_poison);
ioctl_readwrite!(uffdio_api, UFFDIO, _UFFDIO_API, uffdio_api);
// `_IO(0xAA, 0x00)` whose argument is the new fd's flags, passed by value.
ioctl_write_int_bad!(
    userfaultfd_ioc_new,
    request_code_none!(USERFAULTFD_IOC, _USERFAULTFD_IOC_NEW)
);

/// Request codes, for the tests and for callers that issue raw ioctls.
/// (`ioctl_num_type` differs between libcs, hence the casts.)
#[allow(clippy::unnecessary_cast)]
pub mod request {
    use nix::{request_code_none, request_code_read, request_code_readwrite};
    use std::mem::size_of;

    /// `UFFDIO_X`'s code: `_IOWR` (or `_IOR`) of type UFFDIO, number `_UFFDIO_X`, size of its argument.
    macro_rules! uffdio {
        ($($name:ident = $dir:ident($nr:ident, $arg:ident);)+) => {
            $(pub const $name: u64 = $dir!(super::UFFDIO, super::$nr, size_of::<super::$arg>()) as u64;)+
        };
    }

    uffdio! {
        UFFDIO_REGISTER = request_code_readwrite(_UFFDIO_REGISTER, uffdio_register);
        UFFDIO_UNREGISTER = request_code_read(_UFFDIO_UNREGISTER, uffdio_range);
        UFFDIO_WAKE = request_code_read(_UFFDIO_WAKE, uffdio_range);
        UFFDIO_COPY = request_code_readwrite(_UFFDIO_COPY, uffdio_copy);
        UFFDIO_ZEROPAGE = request_code_readwrite(_UFFDIO_ZEROPAGE, uffdio_zeropage);
        UFFDIO_MOVE = request_code_readwrite(_UFFDIO_MOVE, uffdio_move);
        UFFDIO_WRITEPROTECT = request_code_readwrite(_UFFDIO_WRITEPROTECT, uffdio_writeprotect);
        UFFDIO_CONTINUE = request_code_readwrite(_UFFDIO_CONTINUE, uffdio_continue);
        UFFDIO_POISON = request_code_readwrite(_UFFDIO_POISON, uffdio_poison);
        UFFDIO_API = request_code_readwrite(_UFFDIO_API, uffdio_api);
    }
    pub const USERFAULTFD_IOC_NEW: u64 = request_code_none!(super::USERFAULTFD_IOC, super::_USERFAULTFD_IOC_NEW) as u64;
}

// Layouts pinned at compile time (x86_64 ABI, from the kernel header).
macro_rules! assert_layout {
    ($t:ty, size $s:expr, align $a:expr $(, $f:ident @ $o:expr)*) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $s);
        const _: () = assert!(std::mem::align_of::<$t>() == $a);
        $(const _: () = assert!(std::mem::offset_of!($t, $f) == $o);)*
    };
}
assert_layout!(uffdio_api, size 24, align 8, api @ 0, features @ 8, ioctls @ 16);
assert_layout!(uffdio_range, size 16, align 8, start @ 0, len @ 8);
assert_layout!(uffdio_register, size 32, align 8, range @ 0, mode @ 16, ioctls @ 24);
assert_layout!(uffdio_copy, size 40, align 8, dst @ 0, src @ 8, len @ 16, mode @ 24, copy @ 32);
assert_layout!(uffdio_zeropage, size 32, align 8, range @ 0, mode @ 16, zeropage @ 24);
assert_layout!(uffdio_writeprotect, size 24, align 8, range @ 0, mode @ 16);
assert_layout!(uffdio_continue, size 32, align 8, range @ 0, mode @ 16, mapped @ 24);
assert_layout!(uffdio_poison, size 32, align 8, range @ 0, mode @ 16, updated @ 24);
assert_layout!(uffdio_move, size 40, align 8, dst @ 0, src @ 8, len @ 16, mode @ 24, r#move @ 32);
assert_layout!(uffd_msg, size 32, align 1, event @ 0, reserved1 @ 1, reserved2 @ 2, reserved3 @ 4, arg @ 8);
assert_layout!(uffd_msg_arg, size 24, align 1);
assert_layout!(uffd_msg_pagefault, size 20, align 1, flags @ 0, address @ 8, ptid @ 16);
assert_layout!(uffd_msg_remap, size 24, align 1, from @ 0, to @ 8, len @ 16);
assert_layout!(uffd_msg_remove, size 16, align 1, start @ 0, end @ 8);

#[cfg(test)]
mod tests {
    use super::request::*;
    use super::*;

    /// Values from compiling the kernel header on x86_64.
    #[test]
    fn request_codes_match_the_kernel_header() {
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_UNREGISTER, 0x8010_AA01);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(UFFDIO_ZEROPAGE, 0xC020_AA04);
        assert_eq!(UFFDIO_MOVE, 0xC028_AA05);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xC018_AA06);
        assert_eq!(UFFDIO_CONTINUE, 0xC020_AA07);
        assert_eq!(UFFDIO_POISON, 0xC020_AA08);
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(USERFAULTFD_IOC_NEW, 0xAA00);
    }

    #[test]
    fn ioctl_masks_match_the_kernel_header() {
        assert_eq!(UFFD_API_IOCTLS, 0x8000_0000_0000_0003);
        assert_eq!(UFFD_API_RANGE_IOCTLS, 0x1FC);
        assert_eq!(UFFD_API_RANGE_IOCTLS_BASIC, 0x1CC);
        assert_eq!(UFFD_API_REGISTER_MODES, 0x7);
    }

    #[test]
    fn feature_bits_are_contiguous_up_to_move() {
        let all = [
            UFFD_FEATURE_PAGEFAULT_FLAG_WP,
            UFFD_FEATURE_EVENT_FORK,
            UFFD_FEATURE_EVENT_REMAP,
            UFFD_FEATURE_EVENT_REMOVE,
            UFFD_FEATURE_MISSING_HUGETLBFS,
            UFFD_FEATURE_MISSING_SHMEM,
            UFFD_FEATURE_EVENT_UNMAP,
            UFFD_FEATURE_SIGBUS,
            UFFD_FEATURE_THREAD_ID,
            UFFD_FEATURE_MINOR_HUGETLBFS,
            UFFD_FEATURE_MINOR_SHMEM,
            UFFD_FEATURE_EXACT_ADDRESS,
            UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
            UFFD_FEATURE_WP_UNPOPULATED,
            UFFD_FEATURE_POISON,
            UFFD_FEATURE_WP_ASYNC,
            UFFD_FEATURE_MOVE,
        ];
        assert_eq!(all.iter().fold(0, |a, b| a | b), 0x1FFFF);
    }
}
