//! `uffdtest vm` and `uffdtest kconfig`: the VM harness's command line.

use crate::cli::run::Selection;
use crate::runner::discover;
use crate::runner::report;
use crate::vm::boot::AccelChoice;
use crate::vm::boot::{self, Accel};
use crate::vm::init::{Fault, GuestConfig};
use crate::vm::kconfig;
use crate::vm::run::{self as vmrun, GuestEnd, VmOptions};
use crate::vm::vng;
use clap::{Args, ValueEnum};
use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Exit code when the run could not happen (bad input, no QEMU, the guest
/// init could not start the suite), as `uffdtest run` uses for bad input.
pub const EXIT_INFRA: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RunnerKind {
    /// QEMU with the harness's own initramfs.
    Qemu,
    /// virtme-ng (`vng --run KERNEL --exec ...`), sharing the host's root.
    Vng,
}

#[derive(Args, Debug)]
pub struct VmArgs {
    /// The kernel under test: a bzImage/vmlinuz, or a kernel build tree (arch/x86/boot/bzImage).
    #[arg(long, value_name = "PATH")]
    pub kernel: PathBuf,
    #[command(flatten)]
    pub sel: Selection,
    /// Accelerator: auto uses KVM only if it can run the guest, else TCG.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    #[arg(long, value_enum, default_value_t = RunnerKind::Qemu)]
    pub runner: RunnerKind,
    /// Guest memory in MiB.
    #[arg(short = 'm', long, default_value_t = 2048, value_name = "MIB")]
    pub memory: u32,
    /// Guest CPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub smp: u32,
    /// Kill the guest after SECS without any output (console or KTAP); cases not run are reported.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Per-case timeout inside the guest.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub case_timeout: u64,
    /// Cases run at once in the guest; 1 keeps splat attribution exact.
    #[arg(short = 'j', long, default_value_t = 1)]
    pub jobs: usize,
    /// Huge pages the guest init reserves.
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub hugepages: u64,
    /// Extra kernel parameter. Repeatable.
    #[arg(long = "append", value_name = "PARAM")]
    pub append: Vec<String>,
    /// The static uffdtest for the guest's /init (default: this one if static, else built).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// The cargo project that builds the static guest binaries (when --manifest is not given).
    #[arg(long, value_name = "DIR", default_value = env!("CARGO_MANIFEST_DIR"))]
    pub source: PathBuf,
    /// Keep the whole kernel console in FILE.
    #[arg(long, value_name = "FILE")]
    pub console_log: Option<PathBuf>,
    /// Echo the kernel console to stderr as it comes.
    #[arg(long)]
    pub show_console: bool,
    /// Also write the final KTAP (splats and cases not run included) to FILE.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Make the guest init crash the kernel or hang mid-run (tests of the harness itself).
    #[arg(long, value_enum, hide = true)]
    pub inject: Option<Fault>,
}

#[derive(Args, Debug)]
pub struct KconfigArgs {
    /// Check a kernel .config against qemu/uffd.config and list what is missing.
    #[arg(long, value_name = "CONFIG")]
    pub check: Option<PathBuf>,
    /// Use this fragment instead of the built-in qemu/uffd.config.
    #[arg(long, value_name = "FILE")]
    pub fragment: Option<PathBuf>,
}

fn infra(msg: &str) -> ExitCode {
    eprintln!("uffdtest: {msg}");
    ExitCode::from(EXIT_INFRA)
}

/// `uffdtest kconfig`: prints the fragment, or checks a `.config`
/// (exit 1 if a required option is missing).
pub fn kconfig_cmd(a: &KconfigArgs) -> ExitCode {
    let text = match &a.fragment {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => t,
            Err(e) => return infra(&format!("cannot read {}: {e}", p.display())),
        },
        None => kconfig::FRAGMENT.to_string(),
    };
    let frag = match kconfig::parse_fragment(&text) {
        Ok(f) => f,
        Err(e) => return infra(&e),
    };
    let Some(cfg) = &a.check else {
        print!("{text}");
        return ExitCode::SUCCESS;
    };
    let config = match std::fs::read_to_string(cfg) {
        Ok(t) => t,
        Err(e) => return infra(&format!("cannot read {}: {e}", cfg.display())),
    };
    let missing = kconfig::check(&frag, &kconfig::parse_config(&config));
    print!("{}", kconfig::report(&cfg.display().to_string(), frag.len(), &missing));
    if missing.iter().any(|m| m.want.need == kconfig::Need::Required) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn guest_config(a: &VmArgs) -> GuestConfig {
    GuestConfig {
        filters: a.sel.filters.clone(),
        skip: a.sel.skip.clone(),
        mem: a.sel.mem.clone(),
        ioctl: a.sel.ioctl.clone(),
        shard: a.sel.shard,
        run_ignored: a.sel.run_ignored,
        jobs: a.jobs,
        case_timeout_secs: a.case_timeout,
        hugepages: a.hugepages,
        fault: a.inject,
    }
}

/// `uffdtest vm`.
pub fn vm_cmd(a: &VmArgs) -> ExitCode {
    if a.runner == RunnerKind::Vng {
        return vng_cmd(a);
    }
    let o = VmOptions {
        kernel: a.kernel.clone(),
        accel: a.accel,
        memory_mib: a.memory,
        cpus: a.smp,
        timeout: Duration::from_secs(a.timeout),
        console_log: a.console_log.clone(),
        show_console: a.show_console,
        guest: guest_config(a),
        manifest: a.sel.manifest.clone(),
        init: a.init.clone(),
        source: a.source.clone(),
        append: a.append.clone(),
    };
    let mut stdout = std::io::stdout();
    let run = match vmrun::run(&o, &mut stdout) {
        Ok(r) => r,
        Err(e) => return infra(&e),
    };
    let r = &run.report;
    let mut out = stdout.lock();
    for e in &run.guest_errors {
        eprintln!("uffdtest: the guest reported: {e}");
    }
    for s in &run.console.splats {
        let at = match &s.case {
            Some((b, c)) => format!("during {b}: {c}"),
            None => "before any case ran".into(),
        };
        let first = s.lines.first().map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "# kernel {} {at}: {first}", s.kind);
    }
    if run.console.started.is_empty() && run.end != GuestEnd::PoweredOff {
        eprintln!(
            "uffdtest: {} before the guest init ran any case; the console's last lines follow the KTAP",
            run.end
        );
    }
    if run.end != GuestEnd::PoweredOff {
        let _ = writeln!(out, "# {}; last console lines:", run.end);
        for l in run.console.tail().iter().rev().take(15).rev() {
            let _ = writeln!(out, "#   {l}");
        }
    }
    let t = r.totals();
    let since_boot = |d: Duration| format!("{:.1} s", d.saturating_sub(run.boot_started).as_secs_f64());
    let _ = writeln!(
        out,
        "# uffdtest vm: accel {}; build and pack {:.1} s; from boot: first KTAP line {}, verdict {}",
        run.accel,
        run.boot_started.as_secs_f64(),
        run.first_ktap.map(since_boot).unwrap_or_else(|| "never".into()),
        since_boot(run.elapsed)
    );
    let _ = writeln!(out, "# {}", t.ktap_line());
    let _ = writeln!(out, "{}", t.summary_line());
    let _ = out.flush();
    write_reports(a, r);
    let ran_any = r
        .leaves()
        .iter()
        .any(|(_, t)| t.status != crate::runner::Status::Crashed);
    if !run.guest_errors.is_empty() && !ran_any {
        return ExitCode::from(EXIT_INFRA);
    }
    if let GuestEnd::QemuExited(why) = &run.end
        && !run.console.kernel_seen
    {
        eprintln!(
            "uffdtest: the kernel never started ({why}); is {} a bootable x86_64 kernel?",
            a.kernel.display()
        );
        return ExitCode::from(EXIT_INFRA);
    }
    ExitCode::from(r.exit_code() as u8)
}

fn write_reports(a: &VmArgs, r: &crate::runner::Report) {
    let mut ktap = Vec::new();
    let _ = crate::runner::write_ktap(&mut ktap, r);
    let _ = writeln!(ktap, "{}", r.totals().summary_line());
    let writes = [
        (&a.output, String::from_utf8_lossy(&ktap).into_owned()),
        (&a.junit, report::junit(r)),
        (&a.json, report::json(r)),
    ];
    for (path, text) in writes {
        if let Some(p) = path
            && let Err(e) = std::fs::write(p, text)
        {
            eprintln!("uffdtest: cannot write {}: {e}", p.display());
        }
    }
}

/// The `uffdtest run` command the guest executes.
fn guest_command(a: &VmArgs, exe: &Path, manifest: &Path) -> String {
    let mut w: Vec<String> = vec![exe.display().to_string(), "run".into(), "--manifest".into()];
    w.push(manifest.display().to_string());
    w.extend(["--announce-kmsg".into(), "--jobs".into(), a.jobs.to_string()]);
    w.extend([
        "--timeout".into(),
        a.case_timeout.to_string(),
        "--hugepages".into(),
        a.hugepages.to_string(),
    ]);
    for f in &a.sel.filters {
        w.extend(["--filter".into(), f.clone()]);
    }
    for s in &a.sel.skip {
        w.extend(["--skip".into(), s.clone()]);
    }
    if !a.sel.mem.is_empty() {
        w.extend(["--mem".into(), a.sel.mem.join(",")]);
    }
    if !a.sel.ioctl.is_empty() {
        w.extend(["--ioctl".into(), a.sel.ioctl.join(",")]);
    }
    if let Some((k, n)) = a.sel.shard {
        w.extend(["--shard".into(), format!("{k}/{n}")]);
    }
    if a.sel.run_ignored {
        w.push("--run-ignored".into());
    }
    w.iter().map(|s| vng::quote(s)).collect::<Vec<_>>().join(" ")
}

/// `uffdtest vm --runner vng`.
pub fn vng_cmd(a: &VmArgs) -> ExitCode {
    let fail = |m: &str| {
        eprintln!("uffdtest: {m}");
        ExitCode::from(EXIT_INFRA)
    };
    let kernel = match boot::resolve_kernel(&a.kernel) {
        Ok(k) => k,
        Err(e) => return fail(&e),
    };
    let share = match vng::missing_pieces(kernel.config.as_deref()) {
        Ok(s) => s,
        Err(m) => return fail(&format!("--runner vng cannot run here:\n  {}", m.join("\n  "))),
    };
    let manifest: PathBuf = a.sel.manifest.clone().unwrap_or_else(discover::default_manifest);
    if a.sel.build {
        match discover::build(&[]) {
            Ok(m) => {
                if let Err(e) = m.save(&manifest) {
                    return fail(&e);
                }
            }
            Err(e) => return fail(&e),
        }
    }
    if !manifest.is_file() {
        return fail(&format!(
            "no test manifest at {}: pass --build or --manifest",
            manifest.display()
        ));
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("uffdtest"));
    // KVM that cannot run a standard guest (see boot::kvm_failed) is only
    // found by booting; vng gives no early sign, so auto means TCG unless forced.
    let accel = match a.accel {
        boot::AccelChoice::Kvm => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let exec = guest_command(a, &exe, &manifest);
    let args = vng::vng_args(&kernel.image, accel, &share, a.memory, a.smp, &a.append, &exec);
    let child = Command::new("vng")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start vng: {e}")),
    };
    let mut ktap = String::new();
    let mut out = std::io::stdout();
    for line in BufReader::new(child.stdout.take().expect("piped"))
        .lines()
        .map_while(Result::ok)
    {
        let l = line.replace('\r', "");
        let _ = writeln!(out, "{l}");
        ktap.push_str(&l);
        ktap.push('\n');
    }
    let status = child.wait().map(|s| s.code().unwrap_or(255)).unwrap_or(255);
    let report = match crate::runner::parse_ktap(&ktap) {
        Ok(r) => r,
        Err(_) => {
            return fail(&format!(
                "vng exited {status} without KTAP: the guest did not run the suite (255 means the guest panicked or \
                 could not mount its root; rerun vng by hand with --verbose to see the console)"
            ));
        }
    };
    if status == 255 {
        eprintln!(
            "uffdtest: vng exited 255: the guest died before the run finished; cases not reported count as crashed"
        );
    }
    let mut k = Vec::new();
    let _ = crate::runner::write_ktap(&mut k, &report);
    for (p, text) in [
        (&a.output, String::from_utf8_lossy(&k).into_owned()),
        (&a.junit, crate::runner::report::junit(&report)),
        (&a.json, crate::runner::report::json(&report)),
    ] {
        if let Some(p) = p
            && let Err(e) = std::fs::write(p, text)
        {
            eprintln!("uffdtest: cannot write {}: {e}", p.display());
        }
    }
    let code = report.exit_code().max(if status == 255 { 1 } else { 0 });
    ExitCode::from(code as u8)
}
