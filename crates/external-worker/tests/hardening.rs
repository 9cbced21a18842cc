//! The real external-worker binary keeps its credentials from a job running as the same user:
//! such a process cannot read `/proc/<worker>/environ` (where `TEMPORAL_API_KEY` is), while it
//! can read the environment of any other process of that user.
//!
//! Run as root, the test runs the worker, the other process and the reader as `nobody`
//! (65534): root itself reads any process's environment (CAP_SYS_PTRACE), so a job running as
//! root on the local provider is not kept out.

use std::{
    io::Read,
    net::TcpListener,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
};

const API_KEY: &str = "tea-hardening-test-api-key";

/// A command run as `nobody` when this test runs as root, else as this user.
fn as_job_user(program: &str) -> Command {
    let mut command = Command::new(program);
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root {
        // (std also drops root's supplementary groups.)
        command.uid(65534).gid(65534);
    }
    command
}

/// What a process of the job's user gets reading `/proc/<pid>/environ`.
fn read_environ_as_job_user(pid: u32) -> Result<String, String> {
    let out = as_job_user("/bin/cat")
        .arg(format!("/proc/{pid}/environ"))
        .output()
        .expect("run cat");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_process_of_the_same_user_cannot_read_the_worker_s_environment() {
    // A "server" that accepts the worker's connection and never answers: the worker waits in
    // its connection attempt, past the start of `main`.
    let server = TcpListener::bind("127.0.0.1:0").expect("listen");
    let address = server.local_addr().expect("address").to_string();
    let worker = as_job_user(env!("CARGO_BIN_EXE_external-worker"))
        .env_clear()
        .env("TEMPORAL_ADDRESS", &address)
        .env("TEMPORAL_API_KEY", API_KEY)
        .env("TEMPORAL_TLS", "false")
        .env("EXTERNAL_TASK_QUEUE", "hardening-test")
        .env("LOG_LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the external worker");
    let mut worker = Killed(worker);
    let (_connection, _) = server.accept().expect("the worker connects");
    let pid = worker.0.id();

    // The same user's other process: its environment is readable (the reader has the access a
    // job has).
    let other = as_job_user("/bin/sleep")
        .arg("60")
        .env("OTHER_SECRET", "readable")
        .spawn()
        .expect("start sleep");
    let other = Killed(other);
    let other_env = read_environ_as_job_user(other.0.id()).expect("another process's environ");
    assert!(other_env.contains("OTHER_SECRET=readable"));

    let denied = read_environ_as_job_user(pid);
    assert!(
        matches!(&denied, Err(e) if e.contains("Permission denied")),
        "the worker's environment was readable: {denied:?}"
    );
    // Alive after the read, so alive during it: the denial was not a process that had gone.
    assert!(
        worker.0.try_wait().expect("try_wait").is_none(),
        "the worker exited early"
    );
    worker.0.kill().expect("kill the worker");
    let mut stderr = String::new();
    if let Some(mut err) = worker.0.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(!stderr.contains(API_KEY), "{stderr}");
}
