//! A real PostgreSQL server for tests and benchmarks, started from the
//! binaries installed on this machine (Debian package `postgresql`).
//!
//! [`TestPostgres::start`] gives each test a database of its own on one
//! server per test binary. [`PostgresServer`] owns a server outright (a
//! benchmark that wants other settings starts its own).
//!
//! # How a server runs
//! In a fresh directory under the system temp dir: `initdb` (trust
//! authentication, superuser `postgres`, locale C), then `postgres` listening
//! on 127.0.0.1 only, on a free port, with its socket in the directory.
//! PostgreSQL refuses to run as root: when the tests run as root, the server
//! runs as the system user `lattice-pg` (created with `useradd --system` if
//! missing; `nobody` if that fails) and the directory is chowned to it.
//!
//! # Stopping
//! [`PostgresServer`]'s drop stops the server (`pg_ctl stop -m immediate`)
//! and removes the directory. The shared server of [`TestPostgres`] lives
//! in a static, which Rust never drops, so every server also has a watchdog:
//! a shell, started as the server's user, that blocks reading a pipe whose
//! only writer is this process, and runs the same stop and removal when the
//! pipe closes, that is when this process exits, panics or is killed.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// A PostgreSQL binary is not installed.
    #[error(
        "PostgreSQL's `{binary}` was found neither on PATH nor in /usr/lib/postgresql/*/bin: \
         install the Debian package `postgresql`"
    )]
    Missing { binary: &'static str },
    /// No user could be found or made to run the server as (it refuses root).
    #[error("no user to run postgres as: {0}")]
    NoUser(String),
    /// A file or directory of the server could not be made.
    #[error("prepare {path}: {source}")]
    Prepare { path: PathBuf, source: io::Error },
    /// A program could not be started.
    #[error("run {program}: {source}")]
    Spawn { program: String, source: io::Error },
    /// A program ran and failed; its output is kept.
    #[error("{program} failed ({status}):\n{output}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        output: String,
    },
    /// The server exited or did not accept connections in time; its log is
    /// kept.
    #[error("postgres did not start: {reason}\nserver log:\n{log}")]
    NotReady { reason: String, log: String },
}

/// How long a starting server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often readiness is probed.
const READY_PROBE: Duration = Duration::from_millis(50);
/// Attempts to start on a free port: another process may take the port
/// between our probe and the server's bind.
const START_ATTEMPTS: usize = 5;
/// The server's superuser; authentication is `trust`.
pub const SUPERUSER: &str = "postgres";

/// Settings of every server: fast and disposable. `fsync=off` loses data
/// on a machine crash only, which does not matter for a test database.
const FAST_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    // Each test's store holds a pool plus a listening connection, and tests
    // run in parallel.
    ("max_connections", "300"),
];

/// Settings for measuring what a production server would do: every commit
/// flushed to disk before it returns.
pub const DURABLE_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
];

/// The user the server runs as, when it cannot run as us.
#[derive(Debug, Clone, Copy)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

/// One running PostgreSQL server, stopped and removed on drop.
pub struct PostgresServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    user: Option<ServerUser>,
    postgres: Child,
    watchdog: Child,
}

impl PostgresServer {
    /// Starts a fast, disposable server (see [`PostgresServer::try_start_with`]).
    ///
    /// # Panics
    /// If the server cannot be started, with the reason (a missing binary
    /// names the Debian package to install).
    pub fn start() -> PostgresServer {
        PostgresServer::try_start_with(&[])
            .unwrap_or_else(|e| panic!("cannot start a test PostgreSQL server: {e}"))
    }

    /// Starts a server with `settings` (`-c name=value`) on top of the fast
    /// defaults, e.g. [`DURABLE_SETTINGS`].
    ///
    /// # Errors
    /// [`PostgresError`] naming the step that failed.
    pub fn try_start_with(settings: &[(&str, &str)]) -> Result<PostgresServer, PostgresError> {
        let initdb = find_binary("initdb")?;
        let bin = initdb
            .parent()
            .map(Path::to_path_buf)
            .ok_or(PostgresError::Missing { binary: "initdb" })?;
        for binary in ["postgres", "pg_ctl", "pg_isready", "psql"] {
            if !bin.join(binary).is_file() {
                return Err(PostgresError::Missing { binary });
            }
        }
        let user = server_user()?;
        let dir = std::env::temp_dir().join(format!("lattice-pg-{}", uuid::Uuid::new_v4()));
        make_dir(&dir, user)?;
        make_dir(&dir.join("socket"), user)?;
        let started = (|| {
            let data = dir.join("data");
            run(as_user(Command::new(&initdb), user, &dir).args([
                "--pgdata".as_ref(),
                data.as_os_str(),
                "--username".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                // The data is thrown away: do not wait for the disk.
                "--no-sync".as_ref(),
            ]))?;
            let mut attempt = 1;
            loop {
                match start_postgres(&bin, &dir, user, settings) {
                    Ok(started) => return Ok(started),
                    Err(StartError::PortTaken(_)) if attempt < START_ATTEMPTS => attempt += 1,
                    Err(StartError::PortTaken(e) | StartError::Other(e)) => return Err(e),
                }
            }
        })();
        let (postgres, port) = match started {
            Ok(started) => started,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let watchdog = match spawn_watchdog(&bin, &dir, user) {
            Ok(watchdog) => watchdog,
            Err(e) => {
                let mut postgres = postgres;
                stop(&bin, &dir, user, &mut postgres);
                return Err(e);
            }
        };
        Ok(PostgresServer {
            dir,
            bin,
            port,
            user,
            postgres,
            watchdog,
        })
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` for the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a fresh, empty database named `test_<uuid>` and returns its
    /// name.
    ///
    /// # Panics
    /// If `CREATE DATABASE` fails.
    pub fn create_database(&self) -> String {
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        self.sql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        name
    }

    /// Drops `database`, disconnecting whoever is still connected to it.
    ///
    /// # Errors
    /// [`PostgresError`] if `psql` cannot run or the drop fails.
    pub fn drop_database(&self, database: &str) -> Result<(), PostgresError> {
        self.sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
    }

    /// Runs one SQL command in the `postgres` database through `psql`; a
    /// subprocess, so that it works inside and outside an async runtime.
    fn sql(&self, command: &str) -> Result<(), PostgresError> {
        let port = self.port.to_string();
        run(Command::new(self.bin.join("psql")).args([
            "--no-psqlrc",
            "--quiet",
            "--host=127.0.0.1",
            "--port",
            &port,
            "--username",
            SUPERUSER,
            "--dbname=postgres",
            "--set=ON_ERROR_STOP=1",
            "--command",
            command,
        ]))
        .map(drop)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // The watchdog would do the same once this process exits; stop it
        // first so that it never acts on a directory reused later.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        stop(&self.bin, &self.dir, self.user, &mut self.postgres);
    }
}

/// Stops the server now and removes its directory; best effort, as it runs
/// on drop and failure paths.
fn stop(bin: &Path, dir: &Path, user: Option<ServerUser>, postgres: &mut Child) {
    let data = dir.join("data");
    let stopped = as_user(Command::new(bin.join("pg_ctl")), user, dir)
        .arg("stop")
        .arg("--pgdata")
        .arg(&data)
        .args(["--mode=immediate", "--wait"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(stopped, Ok(status) if status.success()) {
        let _ = postgres.kill();
    }
    let _ = postgres.wait();
    let _ = std::fs::remove_dir_all(dir);
}

enum StartError {
    /// The port was taken before the server bound it; worth another try.
    PortTaken(PostgresError),
    Other(PostgresError),
}

/// Starts `postgres` on a free port and waits until it accepts connections.
fn start_postgres(
    bin: &Path,
    dir: &Path,
    user: Option<ServerUser>,
    settings: &[(&str, &str)],
) -> Result<(Child, u16), StartError> {
    let port = free_port().map_err(StartError::Other)?;
    let log_path = dir.join("server.log");
    let log = File::create(&log_path).map_err(|source| {
        StartError::Other(PostgresError::Prepare {
            path: log_path.clone(),
            source,
        })
    })?;
    let log_err = log.try_clone().map_err(|source| {
        StartError::Other(PostgresError::Prepare {
            path: log_path.clone(),
            source,
        })
    })?;
    let mut command = as_user(Command::new(bin.join("postgres")), user, dir);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-k")
        .arg(dir.join("socket"))
        .args(["-p", &port.to_string()]);
    // Later settings of the same name win, so `settings` override the
    // defaults.
    for (name, value) in FAST_SETTINGS.iter().chain(settings) {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    let mut postgres = command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|source| {
            StartError::Other(PostgresError::Spawn {
                program: "postgres".to_string(),
                source,
            })
        })?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = postgres.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let error = PostgresError::NotReady {
                reason: format!("the server exited ({status})"),
                log: log.clone(),
            };
            return Err(if log.contains("could not bind") {
                StartError::PortTaken(error)
            } else {
                StartError::Other(error)
            });
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["--host=127.0.0.1", "--quiet", "--port", &port.to_string()])
            .args(["--username", SUPERUSER, "--dbname=postgres"])
            .status()
            .map_err(|source| {
                StartError::Other(PostgresError::Spawn {
                    program: "pg_isready".to_string(),
                    source,
                })
            })?;
        if ready.success() {
            return Ok((postgres, port));
        }
        if Instant::now() > deadline {
            let _ = postgres.kill();
            let _ = postgres.wait();
            return Err(StartError::Other(PostgresError::NotReady {
                reason: format!("no connection accepted within {READY_TIMEOUT:?}"),
                log: std::fs::read_to_string(&log_path).unwrap_or_default(),
            }));
        }
        std::thread::sleep(READY_PROBE);
    }
}

/// The shell that stops the server and removes its directory once the pipe
/// on its stdin closes (see the module doc). Its arguments: pg_ctl, the data
/// directory, the server's directory.
const WATCHDOG: &str =
    r#"read _unused; "$1" stop --pgdata "$2" --mode=immediate --wait >/dev/null 2>&1; rm -rf "$3""#;

fn spawn_watchdog(
    bin: &Path,
    dir: &Path,
    user: Option<ServerUser>,
) -> Result<Child, PostgresError> {
    as_user(Command::new("/bin/sh"), user, dir)
        .arg("-c")
        .arg(WATCHDOG)
        .arg("lattice-pg-watchdog")
        .arg(bin.join("pg_ctl"))
        .arg(dir.join("data"))
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| PostgresError::Spawn {
            program: "/bin/sh (watchdog)".to_string(),
            source,
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, PostgresError> {
    let prepare = |source| PostgresError::Prepare {
        path: PathBuf::from("127.0.0.1:0"),
        source,
    };
    let listener = TcpListener::bind("127.0.0.1:0").map_err(prepare)?;
    Ok(listener.local_addr().map_err(prepare)?.port())
}

/// `command` run as the server's user (if any), in the server's directory
/// (the user may not be allowed into ours).
fn as_user(mut command: Command, user: Option<ServerUser>, dir: &Path) -> Command {
    if let Some(user) = user {
        // std drops root's supplementary groups when it sets the uid.
        command.uid(user.uid).gid(user.gid);
    }
    command.current_dir(dir);
    command
}

/// Runs `command` to completion; its output if it succeeded.
fn run(command: &mut Command) -> Result<Output, PostgresError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PostgresError::Spawn {
            program: program.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(PostgresError::Failed {
            program,
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

fn make_dir(path: &Path, user: Option<ServerUser>) -> Result<(), PostgresError> {
    let prepare = |source| PostgresError::Prepare {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir(path).map_err(prepare)?;
    if let Some(user) = user {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(prepare)?;
    }
    Ok(())
}

/// A PostgreSQL binary: on PATH (resolved through symlinks, so that its
/// siblings are found), else in the newest `/usr/lib/postgresql/*/bin`.
fn find_binary(binary: &'static str) -> Result<PathBuf, PostgresError> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file());
    if let Some(found) = on_path.and_then(|path| path.canonicalize().ok()) {
        return Ok(found);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin").join(binary)))
        })
        .filter(|(_, path)| path.is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, path)| path)
        .ok_or(PostgresError::Missing { binary })
}

/// The user to run the server as: none (ourselves) unless we are root.
fn server_user() -> Result<Option<ServerUser>, PostgresError> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    const NAME: &str = "lattice-pg";
    if let Some(user) = lookup_user(NAME) {
        return Ok(Some(user));
    }
    // Another test binary may create it at the same moment: whoever loses
    // the race finds it on the second lookup.
    let created = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            NAME,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Some(user) = lookup_user(NAME) {
        return Ok(Some(user));
    }
    lookup_user("nobody").map(Some).ok_or_else(|| {
        PostgresError::NoUser(format!(
            "useradd {NAME} failed ({created:?}) and there is no user nobody"
        ))
    })
}

/// A user's ids from `getent passwd` (which also sees users outside
/// /etc/passwd).
fn lookup_user(name: &str) -> Option<ServerUser> {
    let output = Command::new("getent")
        .args(["passwd", name])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8(output.stdout).ok()?;
    let mut fields = line.trim().split(':').skip(2);
    let uid = fields.next()?.parse().ok()?;
    let gid = fields.next()?.parse().ok()?;
    Some(ServerUser { uid, gid })
}

/// A fresh database for one test on the server this test binary shares,
/// dropped when this value is.
///
/// The server starts on the first call; it stops when the test binary exits
/// (through its watchdog: statics are never dropped).
pub struct TestPostgres {
    server: &'static PostgresServer,
    database: String,
    url: String,
}

impl TestPostgres {
    /// A fresh, empty database on the shared server.
    ///
    /// # Panics
    /// If the server cannot be started (a missing binary names the Debian
    /// package to install) or the database cannot be created.
    pub fn start() -> TestPostgres {
        static SERVER: OnceLock<PostgresServer> = OnceLock::new();
        let server = SERVER.get_or_init(PostgresServer::start);
        let database = server.create_database();
        TestPostgres {
            url: server.url(&database),
            server,
            database,
        }
    }

    /// The URL of this test's database (superuser, no password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of this test's database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The server, to make further databases on it.
    pub fn server(&self) -> &'static PostgresServer {
        self.server
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        // Best effort: the whole server goes when the test binary exits.
        if let Err(e) = self.server.drop_database(&self.database) {
            eprintln!("cannot drop test database {}: {e}", self.database);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(server: &PostgresServer, database: &str, query: &str) -> String {
        let port = server.port().to_string();
        let output = run(Command::new(server.bin.join("psql")).args([
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
            "--host=127.0.0.1",
            "--port",
            &port,
            "--username",
            SUPERUSER,
            "--dbname",
            database,
            "--command",
            query,
        ]))
        .unwrap_or_else(|e| panic!("{query}: {e}"));
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    #[test]
    fn each_test_gets_its_own_database_and_it_is_dropped() {
        let first = TestPostgres::start();
        let second = TestPostgres::start();
        assert_ne!(first.database(), second.database());
        assert_ne!(first.url(), second.url());
        let server = first.server();
        assert_eq!(
            psql(server, first.database(), "SELECT current_database()"),
            first.database()
        );
        psql(server, first.database(), "CREATE TABLE t (x int)");
        assert_eq!(
            psql(
                server,
                second.database(),
                "SELECT count(*) FROM pg_tables WHERE tablename = 't'"
            ),
            "0",
            "databases are separate"
        );
        let name = second.database().to_string();
        drop(second);
        assert_eq!(
            psql(
                server,
                "postgres",
                &format!("SELECT count(*) FROM pg_database WHERE datname = '{name}'")
            ),
            "0",
            "the database is dropped with its TestPostgres"
        );
    }

    #[test]
    fn the_server_never_runs_as_root_and_listens_on_loopback_only() {
        let db = TestPostgres::start();
        let server = db.server();
        assert_eq!(
            psql(server, db.database(), "SHOW listen_addresses"),
            "127.0.0.1"
        );
        let data = server.dir.join("data");
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&data).expect("the data directory exists"),
        );
        if rustix::process::geteuid().is_root() {
            assert_ne!(owner, 0, "the server's files belong to its own user");
        }
    }

    #[test]
    fn a_dropped_server_is_stopped_and_removed() {
        let mut server = PostgresServer::try_start_with(DURABLE_SETTINGS)
            .unwrap_or_else(|e| panic!("cannot start a server: {e}"));
        assert_eq!(
            psql(&server, "postgres", "SHOW fsync"),
            "on",
            "settings override the defaults"
        );
        let (dir, pid) = (server.dir.clone(), server.postgres.id());
        assert!(matches!(server.postgres.try_wait(), Ok(None)), "running");
        drop(server);
        assert!(!dir.exists(), "the directory is removed");
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(!proc_dir.exists(), "the postmaster {pid} is gone");
    }
}
