//! The runner as PID 1 in the guest: mounts what the suite needs, runs the
//! selected cases with KTAP on the second serial port, then powers off.

use crate::runner::passes::run_passes;
use crate::runner::{self, Event, Reporter, RunOptions};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where KTAP goes: the second serial port, so the kernel console (ttyS0)
/// never interleaves with it.
pub const KTAP_PORT: &str = "/dev/ttyS1";

/// The console line that says the guest is alive while a case is quiet.
pub const HEARTBEAT: &str = "uffdtest: heartbeat";

/// What the init writes to the kernel log once the last case is over.
pub const RUN_DONE: &str = "uffdtest: guest run done";

/// What the init writes to the kernel log when the guest gets no swap
/// device (the swap cases then skip), followed by why.
pub const NO_SWAP: &str = "uffdtest: no swap device in the guest: ";

/// The zram device the init swaps on, and its size: room for every page
/// the swap cases page out many times over (they compress well).
const ZRAM: &str = "zram0";
const ZRAM_BYTES: u64 = 256 << 20;

/// Diagnostic prefix of a guest-side error the host shows as is.
pub const GUEST_ERROR: &str = "uffdtest-guest: error: ";

/// Why the init could not run the suite; the host shows it as is.
#[derive(Debug)]
pub enum InitError {
    Mount {
        fstype: &'static str,
        target: &'static str,
        errno: nix::errno::Errno,
    },
    KtapPort(std::io::Error),
    ReadConfig(std::io::Error),
    BadConfig(serde_json::Error),
    /// userfaultfd(2) is ENOSYS.
    NoUserfaultfd,
    /// The runner's own error.
    Run(String),
    Panicked,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InitError::Mount { fstype, target, errno } => write!(
                f,
                "cannot mount {fstype} on {target}: {errno}; is CONFIG_{} set?",
                fstype.to_uppercase()
            ),
            InitError::KtapPort(e) => write!(
                f,
                "cannot open the KTAP port {KTAP_PORT}: {e} (CONFIG_SERIAL_8250 with 2 ports?)"
            ),
            InitError::ReadConfig(e) => write!(f, "cannot read the guest config: {e}"),
            InitError::BadConfig(e) => write!(f, "bad guest config: {e}"),
            InitError::NoUserfaultfd => f.write_str(
                "this kernel has no userfaultfd (userfaultfd(2) is ENOSYS): build it with \
                 CONFIG_USERFAULTFD=y (see qemu/uffd.config)",
            ),
            InitError::Run(e) => f.write_str(e),
            InitError::Panicked => f.write_str("the guest init panicked (see the console log)"),
        }
    }
}

impl std::error::Error for InitError {}

/// A fault the init injects on purpose, so the harness's own tests can check
/// what the host makes of a guest that dies or hangs mid-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// `echo c > /proc/sysrq-trigger` while the second case runs.
    Panic,
    /// Stop producing any output once the second case has started.
    Hang,
}

/// The host's orders, packed into the initramfs as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestConfig {
    pub filters: Vec<String>,
    pub skip: Vec<String>,
    pub mem: Vec<String>,
    /// Variants run only when `mem` names them ([`RunOptions::on_request`]).
    #[serde(default)]
    pub on_request: Vec<String>,
    pub ioctl: Vec<String>,
    /// `--first`: these binaries' cases start the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(usize, usize)>,
    pub run_ignored: bool,
    /// Passes over the selection (`--repeat`); 0 from an older host reads as 1.
    #[serde(default)]
    pub repeat: usize,
    pub jobs: usize,
    /// `--max-fail`: stop starting cases after this many failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fail: Option<usize>,
    pub case_timeout_secs: u64,
    pub hugepages: u64,
    /// How often the init writes [`HEARTBEAT`] to the console, so a long
    /// quiet case (stress) does not read as a hung guest. 0: never.
    #[serde(default)]
    pub heartbeat_secs: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Set in every case's environment ([`RunOptions::case_env`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub case_env: Vec<(String, String)>,
    /// `vm --under-load`: the flake hunter's machine in the guest (load,
    /// khugepaged without sleep, each pass of `repeat` its own THP policy).
    #[serde(default)]
    pub under_load: bool,
    /// `vm --cost`: measure where the run's time goes ([`runner::cost`])
    /// and report it on a `# cost:` line after the totals.
    #[serde(default)]
    pub cost: bool,
}

impl GuestConfig {
    pub fn run_options(&self, manifest: PathBuf) -> RunOptions {
        RunOptions {
            manifest,
            filters: self.filters.clone(),
            skip: self.skip.clone(),
            mem: self.mem.clone(),
            on_request: self.on_request.clone(),
            ioctl: self.ioctl.clone(),
            first: self.first.clone(),
            shard: self.shard,
            run_ignored: self.run_ignored,
            repeat: self.repeat.max(1),
            jobs: self.jobs.max(1),
            max_fail: self.max_fail,
            timeout: Duration::from_secs(self.case_timeout_secs.max(1)),
            announce_kmsg: true,
            watch_kmsg: true,
            hugepages: Some(self.hugepages),
            handle_signals: false,
            case_env: self.case_env.clone(),
            ..RunOptions::default()
        }
    }
}

/// Whether this process is the guest's init: PID 1, or started as `/init`.
pub fn is_guest_init() -> bool {
    std::process::id() == 1 || std::env::args_os().next().is_some_and(|a| a == "/init")
}

/// The hostile machine `vm --under-load` runs its passes on. The harness
/// knows no mm load: the caller of [`main`] hands one in (the CLI's, the
/// same `uffdtest flakes` runs on a host).
pub trait UnderLoad {
    /// Starts the load; what runs, for the kernel log.
    fn start(&mut self) -> Result<String, String>;
    /// Sets pass `i`'s THP policy until the guard drops; names the policy.
    fn pass(&mut self, i: usize) -> (String, Box<dyn std::any::Any>);
    /// Stops the load; what it did, in one line.
    fn stop(&mut self) -> String;
}

/// What the guest's init asks of the suite, which the harness does not
/// know (it knows no memory type, no probe; the CLI does).
pub struct SuiteHooks {
    /// Answers [`RunOptions::unusable`] in the guest.
    pub unusable: fn() -> Vec<(String, String)>,
    /// Times each capability probe, for `vm --cost` ([`runner::cost::measure`]).
    pub probe_costs: fn() -> Vec<(String, f64)>,
}

/// The whole life of the guest. Never returns: PID 1 exiting panics the
/// kernel, so every path ends in power-off.
pub fn main(load: &mut dyn UnderLoad, hooks: &SuiteHooks) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(load, hooks)));
    let error = match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(InitError::Panicked),
    };
    if let Some(e) = error {
        report_error(&e);
    }
    power_off()
}

fn run(load: &mut dyn UnderLoad, hooks: &SuiteHooks) -> Result<(), InitError> {
    mount_all()?;
    kmsg("uffdtest: guest init up");
    if let Err(e) = enable_memcg() {
        kmsg(&format!("uffdtest: no memory controller for child cgroups: {e}"));
    }
    if let Some(want) = std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| gigantic_wanted(&c))
    {
        kmsg(&format!(
            "uffdtest: 1 GiB huge pages: {} of {want}",
            reserve_gigantic(want)
        ));
    }
    match swap_on() {
        Ok(what) => kmsg(&format!("uffdtest: swap on {what}")),
        Err(why) => kmsg(&format!("{NO_SWAP}{why}")),
    }
    let mut port = open_ktap_port()?;
    let dir = Path::new("/");
    let text = std::fs::read_to_string(dir.join(super::initramfs::GUEST_CONFIG)).map_err(InitError::ReadConfig)?;
    let cfg: GuestConfig = serde_json::from_str(&text).map_err(InitError::BadConfig)?;
    if let Err(e) = check_userfaultfd() {
        // report_error() adds the `# uffdtest-guest: error:` line.
        writeln!(port, "KTAP version 1\n1..0 # SKIP {e}").ok();
        return Err(e);
    }
    if cfg.heartbeat_secs > 0 {
        let every = Duration::from_secs(cfg.heartbeat_secs);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(every);
                kmsg(HEARTBEAT);
            }
        });
    }
    let opts = RunOptions {
        unusable: (hooks.unusable)(),
        ..cfg.run_options(dir.join(super::initramfs::TESTS_DIR).join(runner::MANIFEST_NAME))
    };
    // The host cannot time cases that run at once from the console: each result carries its time.
    let mut ktap = runner::report::Ktap::new(&mut port).with_durations();
    let mut fault = FaultInjector {
        fault: cfg.fault,
        started: 0,
    };
    let reporters: &mut [&mut dyn Reporter] = &mut [&mut ktap, &mut fault, &mut Milestones];
    if cfg.under_load {
        hunt(&opts, load, reporters)?;
    } else if cfg.cost {
        let (_, cost) =
            runner::cost::measure(&opts, hooks.probe_costs, reporters).map_err(|e| InitError::Run(e.to_string()))?;
        writeln!(port, "# {}", cost.line()).ok();
    } else {
        runner::execute(&opts, reporters).map_err(|e| InitError::Run(e.to_string()))?;
    }
    port.flush().ok();
    kmsg(RUN_DONE);
    Ok(())
}

/// `vm --under-load`: the passes one after another on a hostile machine,
/// each under its own THP policy, as `uffdtest flakes` runs them on a host.
fn hunt(opts: &RunOptions, load: &mut dyn UnderLoad, reporters: &mut [&mut dyn Reporter]) -> Result<(), InitError> {
    let what = load
        .start()
        .map_err(|e| InitError::Run(format!("cannot start the load: {e}")))?;
    kmsg(&format!("uffdtest: load on: {what}"));
    let n = opts.repeat.max(1);
    let before = |i: usize| {
        let (policy, guard) = load.pass(i);
        kmsg(&format!("uffdtest: pass {} of {n}: {policy}", i + 1));
        guard
    };
    let done = run_passes(opts, n, before, |_, _| {}, reporters).map_err(|e| InitError::Run(e.to_string()));
    kmsg(&format!("uffdtest: load: {}", load.stop()));
    done.map(|_| ())
}

/// `(source, target, fstype)`; a failure is fatal only for proc, sys and dev.
const MOUNTS: &[(&str, &str, &str, bool)] = &[
    ("proc", "/proc", "proc", true),
    ("sysfs", "/sys", "sysfs", true),
    ("devtmpfs", "/dev", "devtmpfs", true),
    ("debugfs", "/sys/kernel/debug", "debugfs", false),
    ("tmpfs", "/tmp", "tmpfs", false),
    ("tmpfs", "/dev/shm", "tmpfs", false),
    ("hugetlbfs", "/dev/hugepages", "hugetlbfs", false),
    // The memcg cases make child cgroups with memory.max here.
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", false),
];

/// The 1 GiB huge pages the kernel command line asks for: `N` of
/// `hugepagesz=1G hugepages=N` (the count that follows the size).
pub fn gigantic_wanted(cmdline: &str) -> Option<u64> {
    let mut words = cmdline.split_whitespace().skip_while(|w| *w != "hugepagesz=1G");
    words.next()?;
    words.next()?.strip_prefix("hugepages=")?.parse().ok()
}

/// Tops the 1 GiB pool up to `want` at run time (the boot-time attempt can
/// fail for want of an aligned free GiB; now, with memory still free,
/// alloc_contig_range can move pages aside). Returns the pool's size.
fn reserve_gigantic(want: u64) -> u64 {
    let path = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";
    let have = || {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    if have() < want {
        let _ = std::fs::write(path, want.to_string());
    }
    have()
}

/// Lets child cgroups of the root take the memory controller (cgroup v2
/// enables no controller below the root until asked); Err is why not.
fn enable_memcg() -> std::io::Result<()> {
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory")
}

fn mount_all() -> Result<(), InitError> {
    use nix::mount::{MsFlags, mount};
    for &(src, target, fstype, required) in MOUNTS {
        let _ = std::fs::create_dir_all(target);
        let plain = || mount(Some(src), target, Some(fstype), MsFlags::empty(), None::<&str>);
        // cgroup2 charges hugetlb pages to memcg (the memcg cases' hugetlb
        // types) only with this option (6.6+); older kernels refuse it.
        let r = if fstype == "cgroup2" {
            mount(
                Some(src),
                target,
                Some(fstype),
                MsFlags::empty(),
                Some("memory_hugetlb_accounting"),
            )
            .or_else(|_| plain())
        } else {
            plain()
        };
        if let Err(errno) = r
            && required
        {
            return Err(InitError::Mount { fstype, target, errno });
        }
    }
    Ok(())
}

/// Loads the modules the host packed (`/modules/NN-name.ko`, in order),
/// sizes zram0, writes a swap header on it and swaps on it, so the swap
/// cases run: zram writes synchronously, so a page paged out leaves the
/// swap cache at once. Ok says what; Err why there is no swap.
fn swap_on() -> Result<String, NoSwap> {
    let mut mods: Vec<_> = std::fs::read_dir(Path::new("/").join(super::initramfs::MODULES_DIR))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    mods.sort();
    for m in &mods {
        let image = std::fs::read(m).map_err(|e| NoSwap::Io(format!("{}", m.display()), e))?;
        load_module(&image).map_err(|e| NoSwap::Syscall(format!("init_module({})", m.display()), e))?;
    }
    let sys = Path::new("/sys/block").join(ZRAM);
    if !sys.exists() {
        return Err(NoSwap::NoZram);
    }
    std::fs::write(sys.join("disksize"), ZRAM_BYTES.to_string())
        .map_err(|e| NoSwap::Io(format!("cannot size {ZRAM} (its compressor missing?)"), e))?;
    let dev = Path::new("/dev").join(ZRAM);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while !dev.exists() {
        if std::time::Instant::now() > until {
            return Err(NoSwap::NoDevice(dev));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let header = swap_header(ZRAM_BYTES, page_size());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .map_err(|e| NoSwap::Io(format!("cannot open {}", dev.display()), e))?;
    f.write_all(&header)
        .and_then(|_| f.sync_all())
        .map_err(|e| NoSwap::Io(format!("cannot write the swap header on {}", dev.display()), e))?;
    drop(f);
    let path = std::ffi::CString::new(dev.as_os_str().as_encoded_bytes()).expect("no NUL in a path");
    // SAFETY: a NUL-terminated path; flags 0 (default priority).
    if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
        return Err(NoSwap::Syscall(
            format!("swapon({})", dev.display()),
            nix::errno::Errno::last(),
        ));
    }
    Ok(format!(
        "{} ({} MiB, {} module(s) loaded)",
        dev.display(),
        ZRAM_BYTES >> 20,
        mods.len()
    ))
}

/// Why the guest has no swap; the swap cases then skip, saying so.
#[derive(Debug)]
enum NoSwap {
    /// What failed, and how.
    Io(String, std::io::Error),
    Syscall(String, nix::errno::Errno),
    NoZram,
    NoDevice(std::path::PathBuf),
}

impl std::fmt::Display for NoSwap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoSwap::Io(what, e) => write!(f, "{what}: {e}"),
            NoSwap::Syscall(what, e) => write!(f, "{what}: {e}"),
            NoSwap::NoZram => write!(f, "the kernel has no zram (CONFIG_ZRAM, see qemu/uffd.config)"),
            NoSwap::NoDevice(d) => write!(f, "{} never appeared", d.display()),
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// init_module(2) of an uncompressed module image, no parameters; a module
/// already there (EEXIST) is fine.
fn load_module(image: &[u8]) -> Result<(), nix::errno::Errno> {
    // SAFETY: the image and the empty parameter string outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_init_module, image.as_ptr(), image.len(), c"".as_ptr()) };
    match nix::errno::Errno::result(r) {
        Ok(_) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first page of a swap area of `bytes`, as mkswap(8) writes it
/// (`union swap_header` in include/linux/swap.h): `version` 1 at 1024,
/// `last_page` (the last usable page's index) at 1028, no bad pages, and
/// the magic `SWAPSPACE2` ending the page.
pub fn swap_header(bytes: u64, page: usize) -> Vec<u8> {
    let mut h = vec![0u8; page];
    let last_page = (bytes / page as u64 - 1) as u32;
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    h[page - 10..].copy_from_slice(b"SWAPSPACE2");
    h
}

/// Opens ttyS1 raw: no `\n` → `\r\n`, no echo, no flow control.
fn open_ktap_port() -> Result<std::fs::File, InitError> {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(KTAP_PORT)
        .map_err(InitError::KtapPort)?;
    if let Ok(mut t) = tcgetattr(&f) {
        cfmakeraw(&mut t);
        let _ = tcsetattr(&f, SetArg::TCSANOW, &t);
    }
    Ok(f)
}

/// The kernel must have the syscall: without CONFIG_USERFAULTFD it is ENOSYS.
fn check_userfaultfd() -> Result<(), InitError> {
    // SAFETY: userfaultfd(2) takes flags only; the fd is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: fd is ours and open.
        unsafe { libc::close(fd as i32) };
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::ENOSYS => Err(InitError::NoUserfaultfd),
        // EPERM etc.: the suite's own cases report what they can and cannot do.
        _ => Ok(()),
    }
}

/// Writes to the kernel log, so the line lands on the console in order with
/// any splat.
fn kmsg(msg: &str) {
    if HUSH.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        // One write is one record; writeln! would add an empty one.
        let _ = f.write_all(format!("{msg}\n").as_bytes());
    }
}

fn report_error(e: &InitError) {
    kmsg(&format!("{GUEST_ERROR}{e}"));
    eprintln!("{GUEST_ERROR}{e}");
    if let Ok(mut port) = std::fs::OpenOptions::new().write(true).open(KTAP_PORT) {
        let _ = writeln!(port, "# {GUEST_ERROR}{e}");
    }
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached without CAP_SYS_BOOT; PID 1 must not exit.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Set by [`Fault::Hang`]: the heartbeat stops too, as in a dead guest.
static HUSH: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Injects [`Fault`] when the second case starts.
struct FaultInjector {
    fault: Option<Fault>,
    started: usize,
}

/// Marks the end of planning in the kernel log, so the console tells where
/// a slow start went: the kernel (up to `guest init up`), init and planning
/// (up to `plan ready`), or the first case.
struct Milestones;

impl Reporter for Milestones {
    fn event(&mut self, e: &Event) -> std::io::Result<()> {
        if let Event::Started { plan, .. } = e {
            kmsg(&format!("uffdtest: plan ready, {} cases", plan.case_count()));
        }
        Ok(())
    }
}

impl Reporter for FaultInjector {
    fn event(&mut self, e: &Event) -> std::io::Result<()> {
        let Event::CaseStarted { .. } = e else { return Ok(()) };
        self.started += 1;
        match (self.fault, self.started) {
            (Some(Fault::Panic), 2) => {
                // Let the case get going, so the crash lands inside it: a few
                // ms, as an api case now ends about 10 ms after it starts under
                // TCG (with 200 ms all 19 had passed before the crash).
                std::thread::spawn(|| {
                    std::thread::sleep(Duration::from_millis(5));
                    kmsg("uffdtest: injecting a panic (sysrq-c)");
                    let _ = std::fs::write("/proc/sysrq-trigger", "c");
                });
            }
            (Some(Fault::Hang), 2) => {
                kmsg("uffdtest: injecting a hang");
                HUSH.store(true, std::sync::atomic::Ordering::SeqCst);
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gigantic_count_follows_its_size_on_the_command_line() {
        assert_eq!(gigantic_wanted("console=ttyS0 hugepagesz=1G hugepages=2 x"), Some(2));
        assert_eq!(gigantic_wanted("hugepages=64 hugepagesz=1G"), None);
        assert_eq!(gigantic_wanted("console=ttyS0"), None);
    }

    #[test]
    fn swap_header_is_what_mkswap_writes() {
        // mkswap(8) on 256 MiB: version 1, last_page 0xffff, SWAPSPACE2.
        let h = swap_header(256 << 20, 4096);
        assert_eq!(h.len(), 4096);
        assert_eq!(h[1024..1036], [1, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert!(h[..1024].iter().all(|&b| b == 0), "boot bits left alone");
    }
}
