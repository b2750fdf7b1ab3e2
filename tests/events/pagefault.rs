// PAGEFAULT payloads. Included by events.rs.

/// What [`one_fault`] saw: the message's flags, address and ptid, page 1's
/// address, and the tid of the thread that faulted.
struct Fault {
    flags: PagefaultFlags,
    address: u64,
    ptid: u32,
    page: usize,
    tid: u32,
}

/// Faults page 1 of `area` (two pages) at byte `off` (a write if `write`)
/// from a thread of its own, resolves it with a copy, and returns what the
/// message said. The caller makes the area, so a short huge-page pool is a
/// SKIP with its reason there (`try_area!`), never a failure here.
fn one_fault(area: Area, features: Features, off: usize, write: bool) -> Fault {
    let uffd = open(features).unwrap_or_else(|e| panic!("open a uffd with {features:?}: {e}"));
    register(&uffd, &area, RegisterMode::MISSING);
    let ps = area.page_size();
    let at = area.page(1) + off;
    let p = park(move || {
        if write {
            write_byte(at, 0xa5);
        }
        read_byte(at)
    });
    assert_parked_in_fault(&p, &uffd);
    let tid = p.tid();
    let (flags, address, ptid) = expect_fault(next_event(&uffd));
    let src = Buf::filled(ps, 0x3c);
    assert_eq!(
        uffd.copy(area.page(1), src.addr(), ps, CopyMode::empty()),
        Ok(ps as i64)
    );
    let got = p.join();
    assert_eq!(got, if write { 0xa5 } else { 0x3c }, "value seen after the copy");
    let want = |i: usize| if i == off && write { 0xa5 } else { 0x3c };
    assert_bytes(&area.read_page(1), want, "page 1 after the copy and the access");
    Fault {
        flags,
        address,
        ptid,
        page: area.page(1),
        tid,
    }
}

/// Skips before `one_fault` for everything it cannot run.
macro_rules! fault_case {
    ($mem:expr, $features:expr) => {{
        require_features!($features);
        require_mode!($mem, RegisterMode::MISSING);
        try_area!(Area::new($mem, 1));
    }};
}

#[apply(all_mem)]
fn read_fault_reports_no_flags_and_the_page_address(#[case] mem: MemType) {
    fault_case!(mem, Features::empty());
    let f = one_fault(try_area!(Area::new(mem, 2)), Features::empty(), 77, false);
    assert_eq!(f.flags, PagefaultFlags::empty());
    assert_eq!(f.address, f.page as u64, "address masked to the {mem} page");
    assert_eq!(f.ptid, 0, "ptid without UFFD_FEATURE_THREAD_ID");
}

#[apply(all_mem)]
fn write_fault_reports_write_flag(#[case] mem: MemType) {
    fault_case!(mem, Features::empty());
    let f = one_fault(try_area!(Area::new(mem, 2)), Features::empty(), 77, true);
    assert_eq!(f.flags, PagefaultFlags::WRITE);
    assert_eq!(f.address, f.page as u64);
    assert_eq!(f.ptid, 0, "ptid without UFFD_FEATURE_THREAD_ID");
}

#[apply(all_mem)]
fn thread_id_reports_the_faulting_thread(#[case] mem: MemType) {
    fault_case!(mem, Features::THREAD_ID);
    let area = try_area!(Area::new(mem, 1));
    let uffd = try_skip!(open(Features::THREAD_ID));
    register(&uffd, &area, RegisterMode::MISSING);
    let at = area.page(0);
    let p = park(move || read_byte(at));
    assert_parked_in_fault(&p, &uffd);
    let (_, _, ptid) = expect_fault(next_event(&uffd));
    assert_eq!(ptid, p.tid(), "ptid is the faulting thread's tid, not the process's");
    assert_ne!(ptid, std::process::id());
    // Resolved with zeros: ZEROPAGE where the registration granted it
    // (never a fallback on its failure), COPY of zeros where it did not
    // (hugetlb's BASIC set).
    let ps = area.page_size();
    if expected_ioctls(mem, RegisterMode::MISSING).contains(Ioctls::ZEROPAGE) {
        assert_eq!(uffd.zeropage(at, ps, ZeropageMode::empty()), Ok(ps as i64));
    } else {
        assert_eq!(
            uffd.copy(at, Buf::filled(ps, 0).addr(), ps, CopyMode::empty()),
            Ok(ps as i64)
        );
    }
    assert_eq!(p.join(), 0);
    assert_eq!(area.read_page(0), vec![0; ps]);
}

#[apply(all_mem)]
fn exact_address_reports_the_unmasked_address(#[case] mem: MemType) {
    fault_case!(mem, Features::EXACT_ADDRESS);
    let f = one_fault(try_area!(Area::new(mem, 2)), Features::EXACT_ADDRESS, 123, false);
    assert_eq!(f.flags, PagefaultFlags::empty());
    assert_eq!(f.address, (f.page + 123) as u64, "EXACT_ADDRESS keeps the byte offset");
    assert_eq!(f.ptid, 0, "ptid without UFFD_FEATURE_THREAD_ID");
}

#[apply(all_mem)]
fn exact_address_with_thread_id_reports_both(#[case] mem: MemType) {
    let f = Features::EXACT_ADDRESS | Features::THREAD_ID;
    fault_case!(mem, f);
    let got = one_fault(try_area!(Area::new(mem, 2)), f, 4095, true);
    assert_eq!(got.flags, PagefaultFlags::WRITE);
    assert_eq!(got.address, (got.page + 4095) as u64);
    assert_eq!(got.ptid, got.tid, "ptid is the faulting thread's tid");
    assert_ne!(got.tid, std::process::id(), "the fault came from a thread of its own");
}
