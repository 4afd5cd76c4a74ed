//! A PostgreSQL cluster child process: `initdb` once, then `postgres` on a loopback port.
//!
//! PostgreSQL refuses to run as root. When we are root, both run as the `postgres` system
//! user on a data directory it owns.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::nats::open_log;
use crate::process::die_with_parent;
use crate::{io_err, StackError};

/// The role every connection uses; the cluster trusts loopback connections.
pub const SUPERUSER: &str = "shop";

pub struct PostgresSpec {
    /// Directory holding `initdb`, `postgres`, `pg_isready`; found when `None`.
    pub bin_dir: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub port: u16,
    pub log_file: PathBuf,
    /// Trade durability for speed (fsync off): for throw-away test clusters only.
    pub throwaway: bool,
}

pub struct PostgresCluster {
    spec: PostgresSpec,
    bin_dir: PathBuf,
    owner: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PostgresCluster {
    /// Initialises the data directory if it is new, starts the server, waits until it
    /// accepts connections.
    pub fn start(spec: PostgresSpec) -> Result<PostgresCluster, StackError> {
        let bin_dir = match &spec.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir()?,
        };
        let owner = if is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let mut cluster = PostgresCluster {
            spec,
            bin_dir,
            owner,
            child: None,
        };
        cluster.init()?;
        cluster.restart()?;
        Ok(cluster)
    }

    /// `postgres://shop@127.0.0.1:<port>/<database>`
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{database}",
            self.spec.port
        )
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(program));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        command.stdin(Stdio::null());
        command
    }

    fn init(&self) -> Result<(), StackError> {
        let data = &self.spec.data_dir;
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        fs::create_dir_all(data).map_err(io_err(data))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(data, Some(uid), Some(gid)).map_err(io_err(data))?;
        }
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(data)
            .args([
                "--auth=trust",
                "--username",
                SUPERUSER,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .output()
            .map_err(|source| StackError::Spawn {
                what: "initdb".into(),
                source,
            })?;
        if !output.status.success() {
            return Err(StackError::Failed {
                what: "initdb".into(),
                detail: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// (Re)starts the server on the same data directory and port.
    pub fn restart(&mut self) -> Result<(), StackError> {
        self.stop();
        let log = open_log(&self.spec.log_file)?;
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(&self.spec.data_dir)
            .args(["-p", &self.spec.port.to_string()])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
            ])
            .args(["-c", "max_connections=400", "-c", "shared_buffers=128MB"])
            .stdout(log.try_clone().map_err(io_err(&self.spec.log_file))?)
            .stderr(log);
        if self.spec.throwaway {
            command.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        // SIGQUIT is PostgreSQL's immediate shutdown: it also ends the backends.
        die_with_parent(&mut command, libc::SIGQUIT);
        let child = command.spawn().map_err(|source| StackError::Spawn {
            what: "postgres".into(),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(60))
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), StackError> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ready = self
                .command("pg_isready")
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.spec.port.to_string(),
                    "-U",
                    SUPERUSER,
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(StackError::Failed {
                        what: "postgres".into(),
                        detail: format!(
                            "exited with {status}; see {}",
                            self.spec.log_file.display()
                        ),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(StackError::NotReady {
            what: "postgres",
            seconds: within.as_secs(),
            log: self.spec.log_file.clone(),
        })
    }

    /// Fast shutdown (SIGINT: sessions are ended and a checkpoint written), then reap.
    pub fn stop_fast(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGINT);
            let _ = child.wait();
        }
    }

    /// Immediate shutdown (SIGQUIT), then reap. Committed transactions survive.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGQUIT);
            let _ = child.wait();
        }
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory effects; pid is our own unreaped child.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[allow(unsafe_code)]
fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and has no side effects.
    unsafe { libc::geteuid() == 0 }
}

/// uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Result<(u32, u32), StackError> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("/etc/passwd"))?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| StackError::Missing {
            what: "the postgres system user",
            hint: "install PostgreSQL with `apt-get install postgresql` (./dev does this)".into(),
        })
}

/// The newest `/usr/lib/postgresql/<ver>/bin` that has `initdb`.
pub fn find_bin_dir() -> Result<PathBuf, StackError> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| StackError::Missing {
            what: "PostgreSQL server binaries",
            hint: "nothing in /usr/lib/postgresql/*/bin; run ./dev, which installs them".into(),
        })
}
