//! nats-server child processes with JetStream: one server, or a cluster of them on
//! loopback ports ([`NatsCluster`]).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Membership of a cluster; `None` for a server of its own.
    pub cluster: Option<ClusterMember>,
}

/// What makes a server one node of a cluster. Given on the command line, so it overrides
/// the config's `server_name` and `cluster` block: one config can serve every node, and a
/// second stack on other ports needs no copy of the node configs.
#[derive(Debug, Clone)]
pub struct ClusterMember {
    pub cluster_name: String,
    /// `server_name`: JetStream names stream and meta leaders by it.
    pub server_name: String,
    /// Where this node listens for routes.
    pub route_port: u16,
    /// The route ports of every node (this one's too: a server drops a route to itself).
    pub routes: Vec<u16>,
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

    /// `server_name` of a cluster node; `None` for a server of its own.
    pub fn server_name(&self) -> Option<&str> {
        self.spec.cluster.as_ref().map(|c| c.server_name.as_str())
    }

    /// Whether the process is running (it was started and has not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
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
            .args(spec.cluster.iter().flat_map(cluster_args))
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
        Err(self.failed("not ready within 20s"))
    }

    /// Waits until the server's `/healthz` answers 200: JetStream is up, in a cluster it
    /// knows the meta leader, and every stream and consumer it holds a replica of is current
    /// (caught up with its leader). Needs a monitor port.
    pub fn wait_healthy(&mut self, within: Duration) -> Result<(), StackError> {
        let Some(monitor) = self.spec.monitor_port else {
            return Err(StackError::Failed {
                what: "nats-server".into(),
                detail: "a health check needs a monitor port".into(),
            });
        };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !self.is_running() {
                return Err(self.failed("exited while waiting for /healthz"));
            }
            if healthz(monitor) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(self.failed(&format!("/healthz not ok within {}s", within.as_secs())))
    }

    fn failed(&self, what: &str) -> StackError {
        let log = std::fs::read_to_string(&self.spec.log_file).unwrap_or_default();
        let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
        StackError::Failed {
            what: format!("nats-server on port {}", self.spec.port),
            detail: format!("{what}: {last}"),
        }
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

fn cluster_args(member: &ClusterMember) -> Vec<String> {
    let routes: Vec<String> = member
        .routes
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect();
    vec![
        "--server_name".into(),
        member.server_name.clone(),
        "--cluster_name".into(),
        member.cluster_name.clone(),
        "--cluster".into(),
        format!("nats://127.0.0.1:{}", member.route_port),
        "--routes".into(),
        routes.join(","),
    ]
}

/// `GET /healthz` on the monitor port answered 200. A bare HTTP/1.0 request: the one call
/// does not justify an HTTP client in a crate that starts processes.
fn healthz(monitor_port: u16) -> bool {
    let ask = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(
            &([127, 0, 0, 1], monitor_port).into(),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
    };
    ask().unwrap_or(false)
}

/// A JetStream cluster of nats-servers on loopback ports: every node is a [`NatsServer`]
/// that can be killed and restarted on its own store.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts every node, then waits until each one is healthy (the cluster has a meta
    /// leader that every node knows). Every spec needs a `cluster` and a monitor port.
    pub fn start(specs: Vec<NatsServerSpec>) -> Result<NatsCluster, StackError> {
        let mut nodes = Vec::with_capacity(specs.len());
        for spec in specs {
            // Each node accepts clients before its routes are up, so nodes can start one
            // after another; the cluster forms once all of them run.
            nodes.push(NatsServer::start(spec)?);
        }
        let mut cluster = NatsCluster { nodes };
        for node in &mut cluster.nodes {
            node.wait_healthy(Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// The client URLs of every node, comma-separated, as clients take a server list.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    pub fn node_mut(&mut self, index: usize) -> &mut NatsServer {
        &mut self.nodes[index]
    }

    /// The index of the node called `server_name`.
    pub fn index_of(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.server_name() == Some(server_name))
    }
}

/// Specs of the `nodes`-node cluster of `<conf_dir>/node-<n>.conf` on consecutive ports from
/// `base`: clients on `base`, `base + 1`, ..., routes 2000 above them and monitoring 4000
/// above (4222.., 6222.., 8222.. for the usual 4222), named `<name>-<n>`, each node's store
/// and log in `dir/<name>-<n>/`.
pub fn local_cluster_specs(
    binary: &Path,
    conf_dir: &Path,
    name: &str,
    base: u16,
    nodes: usize,
    dir: &Path,
) -> Result<Vec<NatsServerSpec>, StackError> {
    let ports: Vec<(u16, u16, u16)> = (0..nodes as u16)
        .map(|i| {
            let client = base.wrapping_add(i);
            (client, client.wrapping_add(2000), client.wrapping_add(4000))
        })
        .collect();
    let conf = |i: usize| conf_dir.join(format!("node-{}.conf", i + 1));
    if let Some(missing) = (0..nodes).map(conf).find(|file| !file.exists()) {
        return Err(StackError::Missing {
            what: "a cluster node's nats-server config",
            hint: missing.display().to_string(),
        });
    }
    Ok(cluster_specs(binary, conf, name, &ports, dir))
}

/// Specs of an `n`-node cluster on loopback: node `i` (from 0) is named `<name>-<i+1>`,
/// serves clients on `ports[i].0`, routes on `ports[i].1` and monitoring on `ports[i].2`,
/// and keeps its store and log under `dir/<name>-<i+1>/`.
pub fn cluster_specs(
    binary: &Path,
    config_of: impl Fn(usize) -> PathBuf,
    name: &str,
    ports: &[(u16, u16, u16)],
    dir: &Path,
) -> Vec<NatsServerSpec> {
    let routes: Vec<u16> = ports.iter().map(|p| p.1).collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, &(client, route, monitor))| {
            let server_name = format!("{name}-{}", i + 1);
            NatsServerSpec {
                binary: binary.to_path_buf(),
                config: config_of(i),
                port: client,
                monitor_port: Some(monitor),
                store_dir: dir.join(&server_name).join("jetstream"),
                log_file: dir.join(&server_name).join("nats-server.log"),
                cluster: Some(ClusterMember {
                    cluster_name: name.to_owned(),
                    server_name,
                    route_port: route,
                    routes: routes.clone(),
                }),
            }
        })
        .collect()
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
