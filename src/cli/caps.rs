//! `uffdtest caps`: the capability probe as a table or JSON.

use crate::caps::{
    Registration, behaviours, caps, feature_names, guest_memfd_caps, guest_memfd_registration, ioctl_names, mode_name,
    registration_matrix,
};
use crate::cli::Exit;
use crate::uffd::Features;
use std::fmt::Write;

#[derive(clap::Args, Debug)]
pub struct CapsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `uffdtest caps`: a probe always answers, so it always succeeds.
pub fn caps_cmd(a: &CapsArgs) -> Exit {
    if a.json {
        println!("{}", json());
    } else {
        print!("{}", table());
    }
    Exit::Ok
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn res(r: &Result<(), impl std::fmt::Display>) -> String {
    match r {
        Ok(()) => "yes".into(),
        Err(e) => format!("no ({e})"),
    }
}

fn size(b: usize) -> String {
    if b >= 1 << 20 && b.is_multiple_of(1 << 20) {
        format!("{}M", b >> 20)
    } else {
        format!("{}K", b >> 10)
    }
}

/// The human table.
pub fn table() -> String {
    let c = caps();
    let mut s = String::new();
    let row = |s: &mut String, k: &str, v: &str| {
        let _ = writeln!(s, "{k:<28} {v}");
    };
    row(&mut s, "kernel", &c.release);
    row(&mut s, "root", yes(c.root));
    row(&mut s, "userfaultfd(2)", &res(&c.syscall));
    row(&mut s, "userfaultfd(2), full", &res(&c.syscall_full));
    row(&mut s, "/dev/userfaultfd", &res(&c.dev_userfaultfd));
    row(
        &mut s,
        "vm.unprivileged_userfaultfd",
        &c.unprivileged_userfaultfd.map_or("absent".into(), |v| v.to_string()),
    );
    row(&mut s, "EVENT_FORK allowed", yes(c.event_fork_allowed));
    row(&mut s, "UFFDIO_API ioctls", &ioctl_names(c.api_ioctls).join(" "));
    row(&mut s, "page size", &size(c.page_size));
    row(
        &mut s,
        "hugetlb",
        &match c.huge_page_size {
            Some(h) => format!(
                "{} pages, {} free of {}",
                size(h),
                c.hugepages_free,
                c.nr_hugepages.unwrap_or(0)
            ),
            None => "absent".into(),
        },
    );
    row(
        &mut s,
        "THP",
        &match (&c.thp, c.pmd_size) {
            (Some(m), Some(p)) => format!(
                "{m}, PMD {}, sizes {}",
                size(p),
                c.thp_sizes.iter().map(|&b| size(b)).collect::<Vec<_>>().join(" ")
            ),
            _ => "absent".into(),
        },
    );
    row(&mut s, "gup_test", yes(c.gup_test));
    row(&mut s, "swap", yes(c.swap));
    let _ = writeln!(s, "\nfeatures (UFFDIO_API on a user-mode-only fd):");
    for (name, bit) in Features::all().iter_names() {
        let _ = writeln!(
            s,
            "  {:<34} {}",
            format!("UFFD_FEATURE_{name}"),
            yes(c.features.contains(bit))
        );
    }
    let _ = writeln!(
        s,
        "\nbehaviours without a feature bit (each probed on its own uffd and memory):"
    );
    for (b, r) in behaviours() {
        let answer = match r {
            Ok(v) => yes(*v).to_string(),
            Err(why) => format!("not probed: {why}"),
        };
        let _ = writeln!(s, "  {:<34} {answer}", b.name());
    }
    let g = guest_memfd_caps();
    let _ = writeln!(s, "\nguest_memfd (KVM):");
    let _ = writeln!(s, "  {:<26} {}", "KVM (/dev/kvm, a VM)", res(&g.kvm));
    let _ = writeln!(
        s,
        "  {:<26} {}",
        "KVM_CAP_GUEST_MEMFD_FLAGS",
        g.guest_memfd_flags.map_or("-".into(), gmem_flags)
    );
    let _ = writeln!(s, "  {:<26} {}", "host mmap", res(&g.guest_memfd_mmap));
    for (mode, r) in guest_memfd_registration() {
        let _ = writeln!(
            s,
            "  {:<26} {}",
            format!("REGISTER {}", mode_name(mode).to_uppercase()),
            registration(r)
        );
    }
    let _ = writeln!(s, "\nregistration (ioctls granted per memory type and mode):");
    for (mem, mode, r) in registration_matrix() {
        let _ = writeln!(s, "  {:<16} {:<18} {}", mem.name(), mode_name(mode), registration(r));
    }
    s
}

fn registration(r: Registration) -> String {
    match r {
        Registration::Granted(i) => ioctl_names(i).join(" "),
        Registration::Refused(e) => format!("refused: {e:?}"),
        Registration::Unprobed(why) => format!("not probed: {why}"),
    }
}

/// `GUEST_MEMFD_FLAG_*` names and the raw value.
fn gmem_flags(raw: u64) -> String {
    let f = crate::kvm::GuestMemfdFlags::from_bits_retain(raw);
    let mut names: Vec<String> = f.iter_names().map(|(n, _)| n.to_string()).collect();
    let unknown = raw & !crate::kvm::GuestMemfdFlags::all().bits();
    if unknown != 0 {
        names.push(format!("{unknown:#x}"));
    }
    format!("{raw:#x} ({})", names.join(" "))
}

/// The JSON form: the probe plus the registration matrix.
pub fn json() -> String {
    let c = caps();
    let matrix: Vec<_> = registration_matrix()
        .into_iter()
        .map(|(m, mode, r)| serde_json::json!({"mem": m, "mode": mode_name(mode), "result": r}))
        .collect();
    let mut v = serde_json::to_value(c).expect("caps serialise");
    if let (Some(v), serde_json::Value::Object(g)) = (
        v.as_object_mut(),
        serde_json::to_value(guest_memfd_caps()).expect("caps serialise"),
    ) {
        v.extend(g);
    }
    v["registration"] = serde_json::Value::Array(matrix);
    v["guest_memfd_registration"] = guest_memfd_registration()
        .into_iter()
        .map(|(mode, r)| serde_json::json!({"mode": mode_name(mode), "result": r}))
        .collect();
    v["feature_names"] = serde_json::json!(feature_names(c.features));
    v["behaviours"] = behaviours()
        .into_iter()
        .map(|(b, r)| {
            // As the JSON has always shown a probe: {"Ok": bool} or {"Err": "why"}.
            let r = match r {
                Ok(present) => serde_json::json!({ "Ok": present }),
                Err(why) => serde_json::json!({ "Err": why.to_string() }),
            };
            serde_json::json!({"behaviour": b, "result": r})
        })
        .collect();
    serde_json::to_string_pretty(&v).expect("json")
}
