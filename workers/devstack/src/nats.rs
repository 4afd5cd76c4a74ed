//! A nats-server child process with JetStream.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{die_with_parent, wait_for_port};
use crate::{io_err, StackError};

pub struct NatsServerSpec {
    pub binary: PathBuf,
    /// Server config file; `listen` is overridden by `port`, the store by `store_dir`.
    pub config: PathBuf,
    pub port: u16,
    /// HTTP monitoring port, overriding the config's `http` (None: as the config says), so
    /// two stacks on different client ports need not fight over one monitoring port.
    pub monitor_port: Option<u16>,
    pub store_dir: PathBuf,
    pub log_file: PathBuf,
}

pub struct NatsServer {
    spec: NatsServerSpec,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start(spec: NatsServerSpec) -> Result<NatsServer, StackError> {
        let mut server = NatsServer { spec, child: None };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.spec.port)
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// (Re)starts the server on the same port and store: a restart loses nothing that
    /// JetStream had written.
    pub fn restart(&mut self) -> Result<(), StackError> {
        self.kill();
        let spec = &self.spec;
        if !spec.binary.exists() {
            return Err(StackError::Missing {
                what: "nats-server",
                hint: format!(
                    "{} does not exist; run ./dev to install it",
                    spec.binary.display()
                ),
            });
        }
        fs::create_dir_all(&spec.store_dir).map_err(io_err(&spec.store_dir))?;
        let log = open_log(&spec.log_file)?;
        let mut command = Command::new(&spec.binary);
        command
            .arg("-c")
            .arg(&spec.config)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &spec.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&spec.store_dir)
            .args(
                spec.monitor_port
                    .iter()
                    .flat_map(|port| ["-m".to_owned(), port.to_string()]),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_err(&spec.log_file))?)
            .stderr(log);
        die_with_parent(&mut command, libc::SIGKILL);
        let child = command.spawn().map_err(|source| StackError::Spawn {
            what: spec.binary.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        let exited = || {
            self.child
                .as_mut()
                .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
        };
        if wait_for_port(spec.port, Duration::from_secs(20), exited) {
            return Ok(());
        }
        let log = std::fs::read_to_string(&spec.log_file).unwrap_or_default();
        let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        Err(StackError::Failed {
            what: "nats-server".into(),
            detail: format!("not ready within 20s: {last}"),
        })
    }

    /// Kills the server with SIGKILL (a crash, not a shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn open_log(path: &Path) -> Result<fs::File, StackError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io_err(path))
}
