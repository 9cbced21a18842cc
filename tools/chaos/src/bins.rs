//! Finding the project's binaries the chaos command runs: `workflow-worker` and
//! `external-worker`, next to the `chaos` executable (where `cargo build --bins` puts them) or
//! in the directory named by `TEA_BIN_DIR`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Paths of the binaries the chaos command runs.
#[derive(Clone, Debug)]
pub struct Bins {
    pub workflow_worker: PathBuf,
    pub external_worker: PathBuf,
}

impl Bins {
    /// Looks in `TEA_BIN_DIR` when set, else next to the current executable.
    pub fn locate() -> anyhow::Result<Bins> {
        let (dir, origin) = match std::env::var_os("TEA_BIN_DIR") {
            Some(dir) if !dir.is_empty() => (PathBuf::from(dir), "TEA_BIN_DIR"),
            _ => {
                let exe = std::env::current_exe().context("cannot find the chaos executable")?;
                let dir = exe
                    .parent()
                    .map(Path::to_path_buf)
                    .context("the chaos executable has no parent directory")?;
                (dir, "the directory of the chaos executable")
            }
        };
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{name} not found in {} ({origin}); run `cargo build --bins` first (or set \
                 TEA_BIN_DIR to the directory holding workflow-worker and external-worker)",
                dir.display()
            );
            Ok(path)
        };
        Ok(Bins {
            workflow_worker: find("workflow-worker")?,
            external_worker: find("external-worker")?,
        })
    }
}
