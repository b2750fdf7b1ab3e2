//! Passing descriptors between processes (SCM_RIGHTS): how a test hands a
//! uffd to a process other than its creator, as a monitor process would.

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A connected AF_UNIX stream pair, close-on-exec.
pub fn socketpair() -> (OwnedFd, OwnedFd) {
    let mut sv = [0; 2];
    // SAFETY: sv receives two new fds.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    assert_eq!(r, 0, "socketpair: {}", Errno::last());
    // SAFETY: both fds are new and ours.
    unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) }
}

/// A control buffer big and aligned enough for one fd.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Runs `f` on a msghdr over one data byte and a control buffer of
/// `controllen` bytes, all on this stack: a raw-forked child may not allocate.
fn with_msghdr<R>(controllen: usize, f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = Cmsg([0; 64]);
    assert!(controllen <= cbuf.0.len());
    // SAFETY: an all-zero msghdr is valid; the buffers it points to outlive `f`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = controllen;
    f(&mut msg)
}

/// Sends `fd` with one data byte; false if sendmsg failed. Allocates
/// nothing, so a raw-forked child may call it.
pub fn send_fd(sock: RawFd, fd: RawFd) -> bool {
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(4) } as usize;
    with_msghdr(space, |msg| {
        // SAFETY: the control buffer holds one cmsg of an int; sendmsg reads
        // only the buffers msg points to.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
            libc::sendmsg(sock, msg, 0) == 1
        }
    })
}

/// Receives one descriptor sent by [`send_fd`] (close-on-exec); panics if
/// none arrives. Allocates nothing on success.
pub fn recv_fd(sock: RawFd) -> OwnedFd {
    with_msghdr(std::mem::size_of::<Cmsg>(), |msg| {
        // SAFETY: recvmsg writes only the buffers msg points to; the
        // received fd becomes ours.
        unsafe {
            let n = libc::recvmsg(sock, msg, libc::MSG_CMSG_CLOEXEC);
            assert_eq!(n, 1, "recvmsg: {}", Errno::last());
            let c = libc::CMSG_FIRSTHDR(msg);
            assert!(!c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS, "no SCM_RIGHTS");
            OwnedFd::from_raw_fd(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
        }
    })
}
