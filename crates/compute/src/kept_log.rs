//! Kept logs: the log of a unit of compute, copied to a file of its own when the unit is
//! deleted (the Docker and Kubernetes providers keep one per unit), whole or not at all.

use std::{
    io::Write,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use futures::{Stream, StreamExt};

/// Writes a kept log to `path`: the `header` line, every chunk of `log`, and a closing line
/// saying when and `how` the unit was deleted. It is written to a temporary file of its own in
/// the same directory and renamed into place, so two deletes of one unit (a run's teardown and
/// an operator's, or two workflow-workers) each write a whole copy and the kept log is one of
/// them, never the two interleaved; a copy whose log could not be read to its end does not
/// replace one already kept. The temporary file is removed on failure.
pub(crate) async fn write_kept_log<B, E>(
    path: &Path,
    header: &str,
    log: impl Stream<Item = Result<B, E>>,
    how: &str,
) -> std::io::Result<()>
where
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let (dir, file) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => (dir, file.to_string_lossy()),
        _ => {
            return Err(std::io::Error::other(format!(
                "no file name in {}",
                path.display()
            )));
        }
    };
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file}.{}-{write}.tmp", std::process::id()));
    let written = async {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        writeln!(out, "{header}")?;
        let mut complete = true;
        futures::pin_mut!(log);
        while let Some(chunk) = log.next().await {
            match chunk {
                Ok(chunk) => out.write_all(chunk.as_ref())?,
                Err(e) => {
                    writeln!(out, "=== the log could not be read to its end: {e}")?;
                    complete = false;
                    break;
                }
            }
        }
        writeln!(
            out,
            "=== {} deleted: {how}",
            chrono::Utc::now().to_rfc3339()
        )?;
        out.sync_all()?;
        if complete || !path.exists() {
            std::fs::rename(&tmp, path)?;
        }
        Ok(())
    }
    .await;
    // Renamed: gone already. Otherwise (failed, or a partial copy not kept) it goes now.
    let _ = std::fs::remove_file(&tmp);
    written
}

/// A provider setting from `get`: `None` when unset or empty, an error naming `key` when it is
/// not UTF-8.
pub(crate) fn setting(
    get: &impl Fn(&str) -> Option<std::ffi::OsString>,
    key: &str,
) -> Result<Option<String>, crate::ProviderError> {
    match get(key) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| crate::ProviderError::permanent(format!("{key} is not valid UTF-8"))),
    }
}

/// Where `provider` keeps logs unless `dir_key` names a directory:
/// `$XDG_STATE_HOME/temporal-external-activity/<provider>/logs`, else `$HOME/.local/state/...`,
/// else `/tmp/temporal-external-activity/<provider>/logs`.
pub(crate) fn log_dir(
    get: &impl Fn(&str) -> Option<std::ffi::OsString>,
    dir_key: &str,
    provider: &str,
) -> Result<std::path::PathBuf, crate::ProviderError> {
    use std::path::PathBuf;
    let app_dir = format!("temporal-external-activity/{provider}/logs");
    Ok(if let Some(dir) = setting(get, dir_key)? {
        PathBuf::from(dir)
    } else if let Some(xdg) = setting(get, "XDG_STATE_HOME")?
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        xdg.join(app_dir)
    } else if let Some(home) = setting(get, "HOME")? {
        PathBuf::from(home).join(".local/state").join(app_dir)
    } else {
        PathBuf::from("/tmp").join(app_dir)
    })
}
