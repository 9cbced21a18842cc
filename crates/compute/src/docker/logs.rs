//! The container's log: the last lines a failed readiness quotes, and the whole log kept in
//! `<log_dir>/<name>.log` when the unit is deleted.

use std::path::PathBuf;

use bollard::{Docker, query_parameters::LogsOptionsBuilder};
use futures::StreamExt;

use super::DockerProvider;
use crate::kept_log::write_kept_log;

impl DockerProvider {
    /// The last `lines` lines of the container's log, joined with ` | `.
    pub(super) async fn log_tail(&self, docker: &Docker, name: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let chunks: Vec<String> = docker
            .logs(name, Some(options))
            .filter_map(|chunk| async move { chunk.ok().map(|c| c.to_string()) })
            .collect()
            .await;
        let text = chunks.concat();
        let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if tail.is_empty() {
            "(none)".to_owned()
        } else {
            tail.join(" | ")
        }
    }

    /// Copies the container's whole log to [`Self::kept_log_path`], with a closing line (see
    /// [`write_kept_log`]: two deletes of one unit never mix their copies).
    pub(super) async fn keep_log(
        &self,
        docker: &Docker,
        name: &str,
        id: &str,
        how: &str,
    ) -> std::io::Result<PathBuf> {
        let path = self.kept_log_path(name);
        let header =
            format!("=== log of container {name} ({id}), kept by the docker compute provider");
        let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        write_kept_log(&path, &header, docker.logs(name, Some(options)), how).await?;
        Ok(path)
    }
}
