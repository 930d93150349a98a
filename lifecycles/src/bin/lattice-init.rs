//! `lattice-init`: the one program Lattice relies on inside a container.
//!
//! Docker's exec API can neither set resource limits on the processes it
//! starts nor signal them, and a user's image may hold no shell and no
//! `sleep`. This small static binary (std and libc only) fills those gaps; the
//! Garden Docker backend uploads it to `/.lattice/bin/lattice-init` before the
//! container starts.
//!
//! # Modes
//! - `lattice-init pause`: PID 1 of every container. Sleeps, reaps orphans
//!   re-parented to it, and on SIGTERM/SIGINT asks every other process of the
//!   container to end (SIGTERM) and exits 0 once none is left (the engine
//!   SIGKILLs whatever remains after its grace period). A second
//!   SIGTERM/SIGINT exits at once.
//! - `lattice-init spawn --pidfile FILE [--nofile N] [--dir D] -- PATH ARGS...`:
//!   starts a new session (so the process and its children form one process
//!   group), writes its own pid to FILE, sets RLIMIT_NOFILE to N (soft and
//!   hard; capped at the container's hard limit, with a warning), changes
//!   to D (created if missing), then replaces itself with PATH (looked up in
//!   `$PATH` when it holds no `/`), so the pid written is the process's own.
//! - `lattice-init signal FILE TERM|KILL`: sends the signal to the process
//!   group whose leader's pid FILE holds. Waits briefly for FILE, since a
//!   signal may race the spawn that writes it. A process that already exited
//!   is not an error.
//!
//! - `lattice-init hold`: reads its standard input until it ends, then exits
//!   0. A cell's liveness lock is a container running this whose stdin the
//!   cell keeps attached: when the cell ends, even killed, the engine closes
//!   the stdin and the lock goes (see the Garden's `cell_lock`).
//!
//! # Exit codes
//! `spawn` exits 127 when PATH cannot be run (126 when permission is denied,
//! as a shell does) or its setup fails; any mode exits 2 on bad usage and 1 on
//! other failures.

// The modes are thin wrappers over system calls that std does not expose
// (setrlimit, setsid, kill, sigwait, waitpid); each unsafe block is one libc
// call on plain integers or on memory owned by the caller.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

/// Exit code of a shell for a command that cannot be found or run.
const EXIT_CANNOT_RUN: u8 = 127;
/// Exit code of a shell for a command that was found but is not executable.
const EXIT_NOT_EXECUTABLE: u8 = 126;
const EXIT_USAGE: u8 = 2;
const EXIT_FAILURE: u8 = 1;

/// How long `signal` waits for the pidfile of a process that was just started.
const PIDFILE_WAIT: Duration = Duration::from_secs(5);

const USAGE: &str = "usage: lattice-init pause
       lattice-init hold
       lattice-init spawn --pidfile FILE [--nofile N] [--dir D] -- PATH [ARGS...]
       lattice-init signal FILE TERM|KILL";

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let mode = args.next();
    let rest: Vec<OsString> = args.collect();
    match mode.as_ref().and_then(|m| m.to_str()) {
        Some("pause") if rest.is_empty() => pause(),
        Some("hold") if rest.is_empty() => hold(),
        Some("spawn") => match SpawnArgs::parse(rest) {
            Ok(spawn_args) => spawn(spawn_args),
            Err(message) => usage_error(&message),
        },
        Some("signal") => match SignalArgs::parse(&rest) {
            Ok(signal_args) => signal(signal_args),
            Err(message) => usage_error(&message),
        },
        _ => usage_error("unknown mode"),
    }
}

/// `hold`: see the module docs. A read error ends it too: the lock must
/// never outlive the stdin it stands for.
fn hold() -> ExitCode {
    use std::io::Read as _;
    let mut buffer = [0u8; 512];
    let mut stdin = io::stdin().lock();
    loop {
        match stdin.read(&mut buffer) {
            Ok(0) => return ExitCode::SUCCESS,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return ExitCode::SUCCESS,
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("lattice-init: {message}\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

fn fail(code: u8, message: std::fmt::Arguments<'_>) -> ExitCode {
    // Nothing sensible is left to do if stderr itself is gone.
    let _ = writeln!(io::stderr(), "lattice-init: {message}");
    ExitCode::from(code)
}

// ---------------------------------------------------------------- pause

fn pause() -> ExitCode {
    let signals = [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT];
    // Blocked signals stay pending, so sigtimedwait sees every one of them and
    // no asynchronous handler is needed.
    let set = signal_set(&signals);
    // SAFETY: `set` is an initialised sigset_t; a null old-set is allowed.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    let mut terminating = false;
    loop {
        let timeout = terminating.then_some(Duration::from_millis(50));
        match wait_signal(&set, timeout) {
            Some(libc::SIGCHLD) => reap_children(),
            Some(_) if terminating => return ExitCode::SUCCESS,
            Some(_) => {
                terminating = true;
                terminate_others();
            }
            None => {}
        }
        if terminating {
            reap_children();
            if !others_alive() {
                return ExitCode::SUCCESS;
            }
        }
    }
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before
    // sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// The next pending signal of `set`, or `None` on timeout or interruption.
fn wait_signal(set: &libc::sigset_t, timeout: Option<Duration>) -> Option<libc::c_int> {
    let result = match timeout {
        // SAFETY: `set` is initialised; a null siginfo pointer is allowed.
        None => unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) },
        Some(timeout) => {
            let spec = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: `set` and `spec` are initialised and outlive the call.
            unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &spec) }
        }
    };
    (result > 0).then_some(result)
}

fn reap_children() {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid out-pointer for the call's duration.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// Asks every other process of the container to end. Only as PID 1: anywhere
/// else `kill(-1)` would reach every process the user may signal.
fn terminate_others() {
    if std::process::id() == 1 {
        // SAFETY: kill takes plain integers.
        unsafe { libc::kill(-1, libc::SIGTERM) };
    }
}

fn others_alive() -> bool {
    if std::process::id() != 1 {
        return false;
    }
    // SAFETY: kill takes plain integers; signal 0 only checks for targets.
    let result = unsafe { libc::kill(-1, 0) };
    !(result == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH))
}

// ---------------------------------------------------------------- spawn

#[derive(Debug, PartialEq)]
struct SpawnArgs {
    pidfile: PathBuf,
    nofile: Option<u64>,
    dir: Option<PathBuf>,
    path: OsString,
    args: Vec<OsString>,
}

impl SpawnArgs {
    fn parse(args: Vec<OsString>) -> Result<SpawnArgs, String> {
        let mut pidfile = None;
        let mut nofile = None;
        let mut dir = None;
        let mut args = args.into_iter();
        loop {
            let flag = args.next().ok_or("spawn: missing -- PATH")?;
            let flag = flag.to_str().ok_or("spawn: flag is not UTF-8")?.to_string();
            if flag == "--" {
                break;
            }
            let value = args
                .next()
                .ok_or_else(|| format!("spawn: {flag} needs a value"))?;
            match flag.as_str() {
                "--pidfile" => pidfile = Some(PathBuf::from(value)),
                "--dir" => dir = Some(PathBuf::from(value)),
                "--nofile" => {
                    let n = value
                        .to_str()
                        .and_then(|v| v.parse::<u64>().ok())
                        .ok_or("spawn: --nofile needs a number")?;
                    nofile = Some(n);
                }
                _ => return Err(format!("spawn: unknown flag {flag}")),
            }
        }
        let path = args.next().ok_or("spawn: missing PATH after --")?;
        Ok(SpawnArgs {
            pidfile: pidfile.ok_or("spawn: --pidfile is required")?,
            nofile,
            dir,
            path,
            args: args.collect(),
        })
    }
}

fn spawn(args: SpawnArgs) -> ExitCode {
    // A new session makes this process the leader of its own process group,
    // so `signal` reaches the children it starts too. EPERM means it leads a
    // group already, which serves as well.
    // SAFETY: setsid takes no arguments.
    unsafe { libc::setsid() };

    if let Err(err) = write_pidfile(&args.pidfile) {
        return fail(
            EXIT_CANNOT_RUN,
            format_args!("write pidfile {}: {err}", args.pidfile.display()),
        );
    }
    if let Some(nofile) = args.nofile {
        if let Err(err) = set_nofile(nofile) {
            return fail(
                EXIT_CANNOT_RUN,
                format_args!("set RLIMIT_NOFILE to {nofile}: {err}"),
            );
        }
    }
    if let Some(dir) = &args.dir {
        if let Err(err) = enter_dir(dir) {
            return fail(
                EXIT_CANNOT_RUN,
                format_args!("change to directory {}: {err}", dir.display()),
            );
        }
    }
    // Command::exec resets the signal mask and SIGPIPE (which the Rust
    // runtime ignores) before execve, so the program starts as under a shell.
    let err = Command::new(&args.path).args(&args.args).exec();
    let code = if err.kind() == io::ErrorKind::PermissionDenied {
        EXIT_NOT_EXECUTABLE
    } else {
        EXIT_CANNOT_RUN
    };
    fail(
        code,
        format_args!("exec {}: {err}", args.path.to_string_lossy()),
    )
}

/// Sets RLIMIT_NOFILE (soft and hard) to `nofile`. Raising the hard limit
/// needs CAP_SYS_RESOURCE, which containers lack by default: above the
/// container's hard limit, the hard limit is used and a warning printed, so
/// the process still runs with as many files as the cell allows.
fn set_nofile(nofile: u64) -> io::Result<()> {
    let wanted = nofile as libc::rlim_t;
    match set_rlimit_nofile(wanted) {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => {
            let hard = get_rlimit_nofile()?.rlim_max;
            if wanted <= hard {
                return Err(err);
            }
            eprintln!("lattice-init: RLIMIT_NOFILE {nofile} exceeds the container's hard limit {hard}; using {hard}");
            set_rlimit_nofile(hard)
        }
        other => other,
    }
}

fn set_rlimit_nofile(limit: libc::rlim_t) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: `limit` is initialised and outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_rlimit_nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid out-pointer for the call's duration.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        Ok(limit)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Writes the pid through a temporary file and a rename, so a concurrent
/// `signal` never reads a half-written pid.
fn write_pidfile(pidfile: &Path) -> io::Result<()> {
    if let Some(parent) = pidfile.parent() {
        std::fs::create_dir_all(parent)?;
        sweep_stale_pidfiles(parent);
    }
    let mut tmp = pidfile.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, pidfile)
}

/// Removes the pidfiles of processes that have exited. A container running
/// a health check every few seconds would otherwise pile up one file per
/// check. A live process's file is kept, and an exited process's file serves
/// nobody: Garden signals only processes its engine reports running. Best
/// effort: files of other users (in the sticky directory) stay.
fn sweep_stale_pidfiles(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().is_none_or(|ext| ext != "pid") {
            continue;
        }
        let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill takes plain integers; signal 0 only checks the target.
        let gone = pid > 1
            && unsafe { libc::kill(pid, 0) } == -1
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Like Garden, creates a missing working directory rather than failing.
fn enter_dir(dir: &Path) -> io::Result<()> {
    match std::env::set_current_dir(dir) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::env::set_current_dir(dir)
        }
        other => other,
    }
}

// ---------------------------------------------------------------- signal

#[derive(Debug, PartialEq)]
struct SignalArgs {
    pidfile: PathBuf,
    signal: libc::c_int,
}

impl SignalArgs {
    fn parse(args: &[OsString]) -> Result<SignalArgs, String> {
        let [pidfile, signal] = args else {
            return Err("signal: expected FILE TERM|KILL".to_string());
        };
        let signal = match signal.to_str() {
            Some("TERM") => libc::SIGTERM,
            Some("KILL") => libc::SIGKILL,
            _ => {
                return Err(format!(
                    "signal: unknown signal {}",
                    signal.to_string_lossy()
                ))
            }
        };
        Ok(SignalArgs {
            pidfile: PathBuf::from(pidfile),
            signal,
        })
    }
}

fn signal(args: SignalArgs) -> ExitCode {
    let pid = match read_pidfile(&args.pidfile) {
        Ok(pid) => pid,
        Err(err) => {
            return fail(
                EXIT_FAILURE,
                format_args!("read pidfile {}: {err}", args.pidfile.display()),
            )
        }
    };
    // The whole group first (the process and its children); the process alone
    // when the group is gone but the process is not (it left the group).
    for target in [-pid, pid] {
        // SAFETY: kill takes plain integers.
        if unsafe { libc::kill(target, args.signal) } == 0 {
            return ExitCode::SUCCESS;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return fail(EXIT_FAILURE, format_args!("signal pid {pid}: {err}"));
        }
    }
    // The process has exited already: nothing is left to signal.
    ExitCode::SUCCESS
}

fn read_pidfile(pidfile: &Path) -> io::Result<libc::pid_t> {
    let deadline = Instant::now() + PIDFILE_WAIT;
    loop {
        match std::fs::read_to_string(pidfile) {
            Ok(text) => {
                return text
                    .trim()
                    .parse::<libc::pid_t>()
                    .ok()
                    .filter(|pid| *pid > 1)
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad pid {:?}", text.trim()),
                        )
                    });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_spawn_arguments() {
        let parsed = SpawnArgs::parse(os(&[
            "--pidfile",
            "/p",
            "--nofile",
            "64",
            "--dir",
            "/d",
            "--",
            "sh",
            "-c",
            "x",
        ]));
        assert_eq!(
            parsed,
            Ok(SpawnArgs {
                pidfile: "/p".into(),
                nofile: Some(64),
                dir: Some("/d".into()),
                path: "sh".into(),
                args: os(&["-c", "x"]),
            })
        );
        // Arguments after `--` are the program's, even when they look like flags.
        let parsed =
            SpawnArgs::parse(os(&["--pidfile", "/p", "--", "ls", "--dir"])).map(|a| a.args);
        assert_eq!(parsed, Ok(os(&["--dir"])));
    }

    #[test]
    fn rejects_bad_spawn_arguments() {
        assert!(
            SpawnArgs::parse(os(&["--", "sh"])).is_err(),
            "pidfile is required"
        );
        assert!(
            SpawnArgs::parse(os(&["--pidfile", "/p"])).is_err(),
            "path is required"
        );
        assert!(
            SpawnArgs::parse(os(&["--pidfile", "/p", "--"])).is_err(),
            "path is required"
        );
        assert!(SpawnArgs::parse(os(&["--pidfile", "/p", "--nofile", "x", "--", "sh"])).is_err());
        assert!(SpawnArgs::parse(os(&["--pidfile", "/p", "--bogus", "1", "--", "sh"])).is_err());
    }

    #[test]
    fn parses_signal_arguments() {
        let parsed = SignalArgs::parse(&os(&["/p", "KILL"]));
        assert_eq!(
            parsed,
            Ok(SignalArgs {
                pidfile: "/p".into(),
                signal: libc::SIGKILL
            })
        );
        assert!(SignalArgs::parse(&os(&["/p", "HUP"])).is_err());
        assert!(SignalArgs::parse(&os(&["/p"])).is_err());
    }

    #[test]
    fn sweeps_pidfiles_of_exited_processes_only() {
        let dir = std::env::temp_dir().join(format!("lattice-init-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let exited = Command::new("true").spawn().expect("true runs");
        let exited_pid = exited.id();
        let mut exited = exited;
        exited.wait().expect("reaped, so its pid is free");
        std::fs::write(dir.join("old.pid"), format!("{exited_pid}\n")).expect("writable");
        std::fs::write(dir.join("live.pid"), format!("{}\n", std::process::id()))
            .expect("writable");
        std::fs::write(dir.join("other.txt"), "1\n").expect("writable");
        sweep_stale_pidfiles(&dir);
        assert!(!dir.join("old.pid").exists());
        assert!(dir.join("live.pid").exists());
        assert!(dir.join("other.txt").exists(), "only pidfiles are swept");
        std::fs::remove_dir_all(&dir).expect("created above");
    }

    #[test]
    fn pidfile_round_trip() {
        let dir = std::env::temp_dir().join(format!("lattice-init-test-{}", std::process::id()));
        let pidfile = dir.join("run/x.pid");
        write_pidfile(&pidfile).expect("temp dir is writable");
        assert_eq!(
            read_pidfile(&pidfile).expect("just written"),
            std::process::id() as libc::pid_t
        );
        std::fs::remove_dir_all(&dir).expect("created above");
    }
}
