//! `ctx->mmap_changing`: while a non-cooperative event (REMOVE, REMAP,
//! UNMAP, FORK) waits to be read, the mappings the monitor sees may be
//! stale, so every resolving ioctl fails EAGAIN and writes -EAGAIN into its
//! progress field, preset by the library to a sentinel so an untouched field
//! shows (fs/userfaultfd.c checks this before reading any argument;
//! WRITEPROTECT returns EAGAIN too, it has no progress field). Once the event
//! is read the same calls work again.
//!
//! The selftests run this on shmem (`mmap-changing`); here every memory
//! type, with each ioctl's normal answer checked after the event.

mod common;
use common::*;
use nix::errno::Errno;
use serial_test::{parallel, serial};
use std::time::Duration;
use uffdtest::testing::Buf;
use uffdtest::testing::mm::{assert_bytes, munmap};
use uffdtest::testing::parked::{park, spawn_child_raw};

const LIMIT: Duration = Duration::from_secs(20);

fn eagain() -> Partial {
    Partial {
        errno: Errno::EAGAIN,
        progress: Partial::neg(Errno::EAGAIN),
    }
}

/// The fixed ABI: the refused ioctl writes -EAGAIN into its progress field
/// (95567729173e, "mm/userfaultfd: fix uninitialized output field for
/// -EAGAIN race"). The library presets the field to a sentinel, so a kernel
/// that returns before writing it (the old ABI: "untouched") fails here;
/// known-issues.toml declares the kernels without the fix.
#[track_caller]
fn assert_eagain(r: Progress, what: &str) {
    assert_eq!(r, Err(eagain()), "{what}: EAGAIN with -EAGAIN in the progress field");
}

/// Every resolving ioctl, with zeroed arguments (as the selftest passes)
/// and with valid ones on the registered range, fails EAGAIN / -EAGAIN.
fn assert_all_refused(uffd: &Uffd, area: &Area, src: &Buf) {
    let (ps, dst) = (area.page_size(), area.page(1));
    let empty = Default::default();
    assert_eagain(uffd.copy(0, 0, 0, empty), "COPY, zeroed");
    assert_eagain(uffd.copy(dst, src.addr(), ps, empty), "COPY");
    assert_eagain(uffd.zeropage(0, 0, Default::default()), "ZEROPAGE, zeroed");
    assert_eagain(uffd.zeropage(dst, ps, Default::default()), "ZEROPAGE");
    assert_eagain(uffd.r#move(0, 0, 0, Default::default()), "MOVE, zeroed");
    assert_eagain(uffd.r#move(dst, src.addr(), ps, Default::default()), "MOVE");
    assert_eagain(uffd.poison(0, 0, Default::default()), "POISON, zeroed");
    assert_eagain(uffd.poison(dst, ps, Default::default()), "POISON");
    assert_eagain(uffd.r#continue(0, 0, Default::default()), "CONTINUE, zeroed");
    assert_eagain(uffd.r#continue(dst, ps, Default::default()), "CONTINUE");
    assert_eq!(
        uffd.writeprotect(0, 0, WriteprotectMode::WP),
        Err(Errno::EAGAIN),
        "WRITEPROTECT, zeroed"
    );
    assert_eq!(
        uffd.writeprotect(dst, ps, WriteprotectMode::empty()),
        Err(Errno::EAGAIN),
        "WRITEPROTECT"
    );
}

#[apply(all_mem)]
#[parallel(fork)]
fn resolving_ioctls_fail_eagain_while_remove_is_pending(#[case] mem: MemType) {
    let base = Features::EVENT_REMOVE | Features::MOVE | Features::POISON;
    require_features!(base);
    require_mode!(mem, RegisterMode::MISSING);
    // Register every mode the type has, so each ioctl's later answer is a
    // success where the kernel grants it.
    let mut features = base;
    let mut mode = RegisterMode::MISSING;
    if testing::register_support(mem, RegisterMode::MISSING | RegisterMode::WP).is_ok() {
        features |= caps::features_for(mem, RegisterMode::WP);
        mode |= RegisterMode::WP;
    }
    let minor = mem.has_file() && testing::register_support(mem, mode | RegisterMode::MINOR).is_ok();
    if minor {
        features |= caps::features_for(mem, RegisterMode::MINOR);
        mode |= RegisterMode::MINOR;
    }
    let area = try_area!(if minor {
        Area::with_alias(mem, 6)
    } else {
        Area::new(mem, 6)
    });
    let ps = area.page_size();
    let src = Buf::filled(ps, 0x5a);
    if minor {
        // Page 4 in the page cache, unmapped in the registered view.
        fill_alias_page(&area, 4, 0xc4);
    }
    let uffd = try_skip!(testing::open_uffd(features));
    uffd.register(area.addr(), area.len(), mode).unwrap();

    let at = area.page(0);
    let p = park_release(mem, at, ps, &uffd);
    assert_all_refused(&uffd, &area, &src);
    match uffd.read_event(Some(LIMIT)).unwrap() {
        Some(Event::Remove { start, end }) => assert_eq!((start, end), (at as u64, (at + ps) as u64)),
        other => panic!("expected UFFD_EVENT_REMOVE, got {other:?}"),
    }
    assert_eq!(p.join(), Ok(()));

    // The same calls get their normal answers again; the refused ones
    // changed nothing (page 1 is still missing: COPY does not fail EEXIST).
    let e = Default::default();
    assert_eq!(
        uffd.copy(area.page(1), src.addr(), ps, e),
        Ok(ps as i64),
        "COPY after the event"
    );
    assert_bytes(&area.read_page(1), |_| 0x5a, "page 1 after COPY");
    if mem.is_hugetlb() {
        let einval = Partial {
            errno: Errno::EINVAL,
            progress: Partial::neg(Errno::EINVAL),
        };
        assert_eq!(
            uffd.zeropage(area.page(2), ps, Default::default()),
            Err(einval),
            "hugetlb has no ZEROPAGE"
        );
    } else {
        assert_eq!(uffd.zeropage(area.page(2), ps, Default::default()), Ok(ps as i64));
        assert_bytes(&area.read_page(2), |_| 0, "page 2 after ZEROPAGE");
    }
    assert_eq!(uffd.poison(area.page(3), ps, Default::default()), Ok(ps as i64));
    if minor {
        assert_eq!(uffd.r#continue(area.page(4), ps, Default::default()), Ok(ps as i64));
        assert_bytes(&area.read_page(4), |_| 0xc4, "page 4 after CONTINUE");
    }
    if mem.is_anon() {
        let moved = Buf::filled(ps, 0x6b);
        assert_eq!(
            uffd.r#move(area.page(5), moved.addr(), ps, Default::default()),
            Ok(ps as i64)
        );
        assert_bytes(&area.read_page(5), |_| 0x6b, "page 5 after MOVE");
    }
    if mode.contains(RegisterMode::WP) {
        assert_eq!(uffd.writeprotect(area.page(1), ps, WriteprotectMode::WP), Ok(()));
    }
}

#[apply(all_mem)]
#[parallel(fork)]
fn copy_fails_eagain_while_remap_is_pending(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMAP, |_| {}));
    let (ps, old) = (area.page_size(), area.addr());
    let src = Buf::filled(ps, 0x21);
    let (p, dest) = park_fixed_mremap(&area, &uffd);
    let to = dest.addr;
    // Neither the old nor the new address: the monitor must read first.
    assert_eagain(uffd.copy(old, src.addr(), ps, Default::default()), "COPY");
    assert_eagain(uffd.copy(to, src.addr(), ps, Default::default()), "COPY");
    assert!(matches!(
        uffd.read_event(Some(LIMIT)).unwrap(),
        Some(Event::Remap { .. })
    ));
    assert_eq!(p.join(), Ok(to));
    area.moved_to(to);
    dest.give_away();
    assert_eq!(uffd.copy(to, src.addr(), ps, Default::default()), Ok(ps as i64));
    assert_eq!(area.read(to, 1)[0], 0x21);
}

#[apply(all_mem)]
#[parallel(fork)]
fn copy_fails_eagain_while_unmap_is_pending(#[case] mem: MemType) {
    let (mut area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_UNMAP, |_| {}));
    let ps = area.page_size();
    let src = Buf::filled(ps, 0x22);
    let (tail, tail_len) = (area.page(1), area.len() - ps);
    let p = park(move || munmap(tail, tail_len).map(|()| 0));
    assert_parked_in_event(&p, &uffd, "munmap");
    // Page 0 stays mapped and registered, yet the copy must wait.
    assert_eagain(uffd.copy(area.page(0), src.addr(), ps, Default::default()), "COPY");
    assert!(matches!(
        uffd.read_event(Some(LIMIT)).unwrap(),
        Some(Event::Unmap { .. })
    ));
    assert_eq!(p.join(), Ok(0));
    area.truncated_to(ps);
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, Default::default()),
        Ok(ps as i64)
    );
    drop(uffd); // before the area's munmap, which would queue UNMAP again
}

#[apply(all_mem)]
#[serial(fork)]
fn copy_fails_eagain_while_fork_is_pending(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 1, Features::EVENT_FORK, |_| {}));
    let ps = area.page_size();
    let src = Buf::filled(ps, 0x23);
    let p = park(|| testing::wait_child(spawn_child_raw(|| 0)));
    assert_parked_in_event(&p, &uffd, "fork");
    assert_eagain(uffd.copy(area.page(0), src.addr(), ps, Default::default()), "COPY");
    assert!(matches!(
        uffd.read_event(Some(LIMIT)).unwrap(),
        Some(Event::Fork { .. })
    ));
    assert_eq!(p.join(), testing::ChildExit::Exited(0));
    assert_eq!(
        uffd.copy(area.page(0), src.addr(), ps, Default::default()),
        Ok(ps as i64)
    );
}

#[apply(all_mem)]
#[parallel(fork)]
fn wake_register_and_unregister_are_not_refused_while_an_event_is_pending(#[case] mem: MemType) {
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    let other = try_area!(Area::new(mem, 1));
    let ps = area.page_size();
    let p = park_release(mem, area.page(0), ps, &uffd);
    // Only the resolving ioctls look at mmap_changing.
    assert_eq!(uffd.wake(area.page(1), ps), Ok(()));
    assert!(uffd.register(other.addr(), other.len(), RegisterMode::MISSING).is_ok());
    assert_eq!(uffd.unregister(other.addr(), other.len()), Ok(()));
    assert!(matches!(
        uffd.read_event(Some(LIMIT)).unwrap(),
        Some(Event::Remove { .. })
    ));
    assert_eq!(p.join(), Ok(()));
}

#[apply(all_mem)]
#[parallel(fork)]
fn monitor_reads_the_pending_event_then_retries_the_copy(#[case] mem: MemType) {
    // The protocol the kernel documents: a fault read before a pending
    // event (faults are served first) cannot be resolved until the event is
    // read; EAGAIN says so, and the retry then succeeds.
    let (area, uffd) = try_skip!(registered_missing(mem, 2, Features::EVENT_REMOVE, |_| {}));
    let (ps, p0) = (area.page_size(), area.page(0));
    let ev = park_release(mem, area.page(1), ps, &uffd);
    let f = park(move || testing::read_byte(p0));
    wait_in_fault(&f);
    let Some(Event::Pagefault { address, .. }) = uffd.read_event(Some(LIMIT)).unwrap() else {
        panic!("the pending fault is read first");
    };
    let src = Buf::filled(ps, 0x71);
    assert_eagain(uffd.copy(address as usize, src.addr(), ps, Default::default()), "COPY");
    assert!(!f.is_done(), "a refused copy wakes nothing");
    assert!(matches!(
        uffd.read_event(Some(LIMIT)).unwrap(),
        Some(Event::Remove { .. })
    ));
    assert_eq!(ev.join(), Ok(()));
    assert_eq!(
        uffd.copy(address as usize, src.addr(), ps, Default::default()),
        Ok(ps as i64)
    );
    assert_eq!(f.join(), 0x71);
}
