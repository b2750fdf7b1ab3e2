//! Boots the kernel under test with the suite as its initramfs ([`build`],
//! [`initramfs`]), one [`session`] per boot (KVM, else TCG), and judges the
//! run ([`verdict`]); then tells the user how it went.
//!
//! [`build`]: super::build
//! [`initramfs`]: super::initramfs
//! [`session`]: super::session
//! [`verdict`]: super::verdict

use super::boot::{self, Accel, AccelChoice, Boot};
use super::build::static_suite;
use super::console::Console;
use super::error::VmError;
use super::initramfs::{self, Contents};
use super::kconfig;
use super::options::VmOptions;
pub use super::session::GuestEnd;
use super::session::{Session, Timeline, boot_once};
use super::verdict::{add_durations, verdict};
use crate::runner::discover;
use crate::runner::known::{Expectations, Facts, KnownIssues};
use crate::runner::{Report, Status};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A finished VM run.
#[derive(Debug)]
pub struct VmRun {
    pub report: Report,
    pub accel: Accel,
    pub end: GuestEnd,
    pub console: Console,
    /// Errors the guest init reported (no userfaultfd, nothing selected...).
    pub guest_errors: Vec<String>,
    /// Whether any KTAP arrived.
    pub ktap_seen: bool,
    /// From the start of `run`: the boot that gave the verdict began, each
    /// step of its start came, the verdict was ready.
    pub boot_started: Duration,
    pub timeline: Timeline,
    pub elapsed: Duration,
}

/// Builds the guest, boots it (falling back from KVM to TCG if asked),
/// relays KTAP lines to `ktap_out` as they come. Err means the run could not
/// start (bad kernel, no QEMU, build failed): an infrastructure error.
pub fn run(o: &VmOptions, ktap_out: &mut dyn Write) -> Result<VmRun, VmError> {
    let start = Instant::now();
    let kernel = boot::resolve_kernel(&o.kernel)?;
    let qemu = boot::find_qemu()?;
    if let Some(cfg) = &kernel.config {
        precheck_config(cfg)?;
    }
    let work = WorkDir::new()?;
    let (init, mut manifest) = static_suite(o)?;
    let manifest_path = work.path.join(discover::MANIFEST_NAME);
    // Listed here, on the host: the guest then starts its first case at once.
    manifest.record_listings(&manifest_path).map_err(VmError::runner)?;
    manifest.write(&manifest_path).map_err(VmError::runner)?;
    let plan = crate::runner::plan(&o.guest.run_options(manifest_path.clone())).map_err(VmError::runner)?;
    if plan.case_count() == 0 {
        return Err(VmError::NothingSelected);
    }
    // Only the binaries the run needs go into the initramfs, which the guest
    // kernel unpacks before anything runs (~0.75 s for the whole suite's
    // 84 MB under TCG). The guest plans the same selection from this manifest.
    if plan.binaries.len() < manifest.binaries.len() {
        manifest
            .binaries
            .retain(|b| plan.binaries.iter().any(|p| p.name == b.name));
        manifest.write(&manifest_path).map_err(VmError::runner)?;
    }
    let initrd = work.path.join("initramfs.cpio");
    let tree = o.kernel.is_dir().then_some(o.kernel.as_path());
    let modules = match initramfs::swap_modules(&kernel.image, tree, kernel.config.as_deref()) {
        Ok(initramfs::GuestSwap::Modules(m)) => m,
        Ok(initramfs::GuestSwap::BuiltIn) => Vec::new(),
        Err(why) => {
            eprintln!("uffdtest: the guest gets no swap device ({why}); its swap cases will skip");
            Vec::new()
        }
    };
    let guest_config = serde_json::to_string(&o.guest).expect("guest config serialises");
    initramfs::write(
        &initrd,
        &Contents {
            init,
            tests: manifest,
            guest_config,
            modules,
        },
    )?;

    let mut accel = pick_accel(o.accel);
    loop {
        let b = Boot {
            kernel: kernel.image.clone(),
            initrd: initrd.clone(),
            accel,
            memory_mib: o.memory_mib,
            cpus: o.cpus,
            ktap_file: work.path.join(format!("ktap-{accel}.txt")),
            extra_cmdline: o.append.clone(),
        };
        let probe = o.accel == AccelChoice::Auto && accel == Accel::Kvm;
        let boot_started = start.elapsed();
        match boot_once(&qemu, &b, o, probe, ktap_out, start)? {
            Session::KvmBroken(why) => {
                eprintln!("uffdtest: KVM cannot run this guest here ({why}); falling back to TCG");
                accel = Accel::Tcg;
            }
            Session::Done(s) => {
                let mut report = verdict(
                    &plan,
                    s.ktap.as_deref(),
                    &s.console,
                    &s.end,
                    &s.guest_errors,
                    o.guest.jobs,
                );
                if o.guest.jobs <= 1 {
                    add_durations(&mut report, &s.console);
                }
                return Ok(VmRun {
                    report,
                    accel,
                    end: s.end,
                    console: s.console,
                    guest_errors: s.guest_errors,
                    ktap_seen: s.ktap.is_some(),
                    boot_started,
                    timeline: s.timeline,
                    elapsed: start.elapsed(),
                });
            }
        }
    }
}

/// `--accel`: forced, or KVM when `/dev/kvm` opens (the boot then proves
/// it can run the guest, see [`boot_once`]).
pub fn pick_accel(choice: AccelChoice) -> Accel {
    match choice {
        AccelChoice::Kvm => Accel::Kvm,
        AccelChoice::Tcg => Accel::Tcg,
        AccelChoice::Auto if boot::kvm_usable() => Accel::Kvm,
        AccelChoice::Auto => Accel::Tcg,
    }
}

/// A kernel build tree's `.config` must have every required option.
fn precheck_config(cfg: &Path) -> Result<(), VmError> {
    let text = std::fs::read_to_string(cfg).map_err(VmError::io(format!("cannot read {}", cfg.display())))?;
    let frag = kconfig::parse_fragment(kconfig::FRAGMENT).expect("qemu/uffd.config parses (a unit test checks)");
    let missing: Vec<_> = kconfig::check(&frag, &kconfig::parse_config(&text))
        .into_iter()
        .filter(|m| m.want.need == kconfig::Need::Required)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(VmError::MissingOptions {
        config: cfg.to_path_buf(),
        options: missing
            .iter()
            .map(|m| format!("{}={}", m.want.name, m.want.value))
            .collect(),
    })
}

/// A temporary directory removed on drop.
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> Result<WorkDir, VmError> {
        let path = std::env::temp_dir().join(format!("uffdtest-vm-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(VmError::io(format!("cannot create {}", path.display())))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `uffdtest vm` with QEMU: the run with its KTAP on stdout, then how it
/// went (splats, how the guest ended, timings) and the report files. Err
/// when the run says nothing about the kernel.
pub fn run_and_report(o: &VmOptions, known: Option<&KnownIssues>) -> Result<Report, VmError> {
    let mut stdout = std::io::stdout();
    let start_unix = crate::runner::kcidb::now_unix();
    let mut run = run(o, &mut stdout)?;
    for e in &run.guest_errors {
        eprintln!("uffdtest: the guest reported: {e}");
    }
    if let Some(k) = known {
        let _ = judge_known(
            &mut run.report,
            k,
            run.console.kernel_release.clone(),
            &mut stdout.lock(),
        );
    }
    let _ = run.summarise(&mut stdout.lock());
    if let Some(cost) = crate::runner::cost::SuiteCost::from_report(&run.report) {
        let mut out = stdout.lock();
        let _ = writeln!(out, "# where the guest's run went (vm --cost):");
        for l in cost.table().lines() {
            let _ = writeln!(out, "#{}{l}", if l.is_empty() { "" } else { "   " });
        }
    }
    run.report.start_unix.get_or_insert(start_unix);
    let kernel = run
        .console
        .kernel_release
        .clone()
        .unwrap_or_else(|| o.kernel.display().to_string());
    o.reports
        .with_kernel(&kernel, &format!("uffdtest vm --accel {}", run.accel))
        .write(&run.report, true);
    let ran_any = run.report.leaves().iter().any(|(_, t)| t.status != Status::Crashed);
    if !run.guest_errors.is_empty() && !ran_any {
        return Err(VmError::GuestRanNothing);
    }
    if !run.console.kernel_seen {
        return Err(VmError::NoKernelOutput {
            end: run.end,
            kernel: o.kernel.clone(),
        });
    }
    Ok(run.report)
}

/// Applies the declared known issues to the guest's results, judged by the
/// guest's release (the console banner; the guest's probes are not seen from
/// here, so an issue conditioned on a probe fact does not match), and names
/// each XFAIL/XPASS as a diagnostic after the relayed KTAP.
pub fn judge_known(
    report: &mut Report,
    k: &KnownIssues,
    release: Option<String>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let e = Expectations {
        issues: k.clone(),
        facts: Facts {
            release,
            ..Facts::default()
        },
    };
    e.apply_report(report);
    for (path, t) in report.leaves() {
        if matches!(t.status, Status::Xfail | Status::Xpass) {
            let reason = t.reason.as_deref().unwrap_or("");
            writeln!(
                out,
                "# {} {}: {reason}",
                t.status.name().to_uppercase(),
                path.join(": ")
            )?;
        }
    }
    Ok(())
}

impl VmRun {
    /// Where the boot's time went, from QEMU's start: `kernel console 0.1 s`,
    /// `init up 3.4 s`, ..., `verdict 67.0 s`.
    pub fn from_boot(&self) -> Vec<String> {
        let verdict = self.elapsed.saturating_sub(self.boot_started).as_secs_f64();
        self.timeline
            .since(self.boot_started)
            .into_iter()
            .chain(self.timeline.first_ktap.is_none().then(|| "no KTAP line".into()))
            .chain([format!("verdict {verdict:.1} s")])
            .collect()
    }

    /// The KTAP diagnostics after the guest's own KTAP: each splat, the
    /// console's last lines if the guest did not power off, timings, totals.
    fn summarise(&self, out: &mut dyn Write) -> std::io::Result<()> {
        for s in &self.console.splats {
            let at = match &s.case {
                Some((b, c)) => format!("during {b}: {c}"),
                None => "before any case ran".into(),
            };
            let first = s.lines.first().map(String::as_str).unwrap_or("");
            writeln!(out, "# kernel {} {at}: {first}", s.kind)?;
        }
        if self.console.started.is_empty() && self.end != GuestEnd::PoweredOff {
            eprintln!(
                "uffdtest: {} before the guest init ran any case; the console's last lines follow the KTAP",
                self.end
            );
        }
        if self.end != GuestEnd::PoweredOff {
            writeln!(out, "# {}; last console lines:", self.end)?;
            for l in self.console.tail().iter().rev().take(15).rev() {
                writeln!(out, "#   {l}")?;
            }
        }
        let t = self.report.totals();
        writeln!(
            out,
            "# uffdtest vm: accel {}; build and pack {:.1} s; from boot: {}",
            self.accel,
            self.boot_started.as_secs_f64(),
            self.from_boot().join(", ")
        )?;
        writeln!(out, "# {}", t.ktap_line())?;
        writeln!(out, "{}", t.summary_line())?;
        out.flush()
    }
}
