//! Deleting a unit: its pod's log kept first, then the Job deleted in the foreground, and the
//! confirmation that neither the Job, nor a pod of ours, nor its Secret is left.

use std::path::PathBuf;

use kube::api::LogParams;
use tokio::time::Instant;

use super::{
    KubernetesProvider, POLL, REMOVE_CONFIRM,
    cluster::{Cluster, api_error, delete_quietly, mark_of},
    manifest,
};
use crate::{ProviderError, kept_log::write_kept_log};

impl KubernetesProvider {
    /// Copies the log of `pod` to [`Self::kept_log_path`].
    pub(super) async fn keep_log(
        &self,
        c: &Cluster,
        name: &str,
        pod: &str,
        how: &str,
    ) -> std::io::Result<PathBuf> {
        let path = self.kept_log_path(name);
        let header =
            format!("=== log of pod {pod} of Job {name}, kept by the kubernetes compute provider");
        let log = c.pods().logs(pod, &LogParams::default()).await;
        let chunk = log.map_err(|e| format!("{e}"));
        write_kept_log(&path, &header, futures::stream::iter([chunk]), how).await?;
        Ok(path)
    }

    /// Polls until neither the Job `name` nor a pod of ours of it is listed, deleting what the
    /// cluster leaves (pods of ours whose Job is gone, the Secret); an error after the wait.
    pub(super) async fn confirm_gone(&self, c: &Cluster, name: &str) -> Result<(), ProviderError> {
        let deadline = Instant::now() + REMOVE_CONFIRM + self.cfg.stop_grace;
        loop {
            let job = c
                .jobs()
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("confirming Job {name} is gone"), e))?;
            let pods = self.our_pods(c, name).await?;
            if job.is_none() {
                for pod in pods
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    // Orphaned (the Job was deleted without its dependents): ours to remove.
                    delete_quietly(&c.pods(), pod.metadata.name.as_deref().unwrap_or("")).await?;
                }
                if pods.is_empty() {
                    self.delete_secret(c, name).await?;
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::transient(format!(
                    "Job {name} ({}) or its pods ({}) still listed {} after the delete",
                    if job.is_some() { "still there" } else { "gone" },
                    pods.len(),
                    humantime::format_duration(REMOVE_CONFIRM + self.cfg.stop_grace)
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Deletes the unit's Secret when it is ours (the cluster usually has, with the Job).
    async fn delete_secret(&self, c: &Cluster, name: &str) -> Result<(), ProviderError> {
        let secret_name = manifest::secret_name(name);
        let secrets = c.secrets();
        match secrets.get_opt(&secret_name).await {
            Ok(Some(s)) if self.owner.marks(mark_of(&s.metadata)) => {
                delete_quietly(&secrets, &secret_name).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(api_error(&format!("reading Secret {secret_name}"), e)),
        }
    }
}
