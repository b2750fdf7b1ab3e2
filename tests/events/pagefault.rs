// PAGEFAULT payloads. Included by events.rs.

/// Faults page 1 at byte `off` (a write if `write`), resolves it with a copy, and
/// returns the message's (flags, address, ptid) and page 1's address.
fn one_fault(mem: MemType, features: Features, off: usize, write: bool) -> Option<(PagefaultFlags, u64, u32, usize)> {
    let area = Area::new(mem, 2).ok()?;
    let uffd = open(features).ok()?;
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
    Some((flags, address, ptid, area.page(1)))
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
    let (flags, address, ptid, page) = one_fault(mem, Features::empty(), 77, false).unwrap();
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(address, page as u64, "address masked to the {mem} page");
    assert_eq!(ptid, 0, "ptid without UFFD_FEATURE_THREAD_ID");
}

#[apply(all_mem)]
fn write_fault_reports_write_flag(#[case] mem: MemType) {
    fault_case!(mem, Features::empty());
    let (flags, address, _, page) = one_fault(mem, Features::empty(), 77, true).unwrap();
    assert_eq!(flags, PagefaultFlags::WRITE);
    assert_eq!(address, page as u64);
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
    uffd.zeropage(at, area.page_size(), ZeropageMode::empty())
        .or_else(|_| {
            uffd.copy(
                at,
                Buf::filled(area.page_size(), 0).addr(),
                area.page_size(),
                CopyMode::empty(),
            )
        })
        .expect("resolve");
    assert_eq!(p.join(), 0);
}

#[apply(all_mem)]
fn exact_address_reports_the_unmasked_address(#[case] mem: MemType) {
    fault_case!(mem, Features::EXACT_ADDRESS);
    let (flags, address, _, page) = one_fault(mem, Features::EXACT_ADDRESS, 123, false).unwrap();
    assert_eq!(flags, PagefaultFlags::empty());
    assert_eq!(address, (page + 123) as u64, "EXACT_ADDRESS keeps the byte offset");
}

#[apply(all_mem)]
fn exact_address_with_thread_id_reports_both(#[case] mem: MemType) {
    let f = Features::EXACT_ADDRESS | Features::THREAD_ID;
    fault_case!(mem, f);
    let (flags, address, ptid, page) = one_fault(mem, f, 4095, true).unwrap();
    assert_eq!(flags, PagefaultFlags::WRITE);
    assert_eq!(address, (page + 4095) as u64);
    assert_ne!(ptid, 0);
}
