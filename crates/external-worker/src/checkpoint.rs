//! The job's checkpoint channel: where a command records how far it got, so that a fresh unit
//! of compute resumes it after this one is lost.
//!
//! The runner gives the job [`CHECKPOINT_FILE_ENV`], a path in the job's own directory. The
//! job (re)writes that file with one JSON value whenever it likes; at each heartbeat the runner
//! reads it and sends it with the heartbeat, and Temporal keeps the last heartbeat when the
//! unit dies. On the next unit the job gets [`RESUME_FILE_ENV`], a file holding that value (the
//! same JSON value; keys and whitespace may be laid out differently), and [`ATTEMPT_ENV`], the
//! run's compute attempt; with nothing to resume from, the resume file is not set.
//!
//! Only a complete JSON value is sent: a file that does not parse (one read while the job was
//! writing it) is not, and the previous checkpoint stays until a complete one is read. Writing
//! another file and renaming it over the checkpoint file makes every read complete (a cut-off
//! bare number would still parse: write an object or an array). A checkpoint larger than the
//! limit, or holding the value of one of the job's secrets, is refused the same way: the
//! previous checkpoint stays, the refusal is logged and shown in the job's progress
//! (`checkpoint_error`), and nothing else fails. A checkpoint is NOT secret: it is stored in
//! the workflow's history, like the job's progress.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde_json::Value;

use crate::mask::Secrets;

/// Environment variable naming the file the job may write its checkpoint to.
pub const CHECKPOINT_FILE_ENV: &str = "TEA_CHECKPOINT_FILE";
/// Environment variable naming the file holding the checkpoint to resume from (set only when
/// there is one).
pub const RESUME_FILE_ENV: &str = "TEA_RESUME_FILE";
/// Environment variable holding the run's compute attempt (1 on the first unit).
pub const ATTEMPT_ENV: &str = "TEA_ATTEMPT";
/// Largest checkpoint sent, in bytes: it is stored in the workflow's history.
pub const DEFAULT_CHECKPOINT_BYTES: usize = 64 * 1024;

/// Writes the checkpoint to resume from into `path`, for the job to read.
pub fn write_resume_file(path: &Path, checkpoint: &Value) -> std::io::Result<()> {
    std::fs::write(path, serde_json::to_vec(checkpoint)?)
}

/// The job's checkpoint file and the last checkpoint taken from it.
#[derive(Debug)]
pub struct Checkpoints {
    path: PathBuf,
    limit: usize,
    secrets: Arc<Secrets>,
    /// The last checkpoint taken (at first, the one the job resumes from).
    current: Option<Value>,
    /// Why the file as it is now was not taken.
    refused: Option<String>,
}

impl Checkpoints {
    /// The checkpoint file at `path` (not created: the job writes it), taken up to `limit`
    /// bytes; `resumed_from` is the checkpoint until the job writes one.
    pub fn new(
        path: PathBuf,
        limit: usize,
        secrets: Arc<Secrets>,
        resumed_from: Option<Value>,
    ) -> Checkpoints {
        Checkpoints {
            path,
            limit,
            secrets,
            current: resumed_from,
            refused: None,
        }
    }

    /// Reads the file and takes its checkpoint when it is acceptable; returns the checkpoint
    /// to send and why the file as it is now was refused, if it was.
    pub fn refresh(&mut self) -> (Option<Value>, Option<String>) {
        match std::fs::metadata(&self.path) {
            Ok(metadata) => self.take(metadata.len()),
            // Not written (yet): the previous checkpoint, if any, stays.
            Err(_) => self.refused = None,
        }
        (self.current.clone(), self.refused.clone())
    }

    fn take(&mut self, len: u64) {
        match self.parse(len) {
            Ok(value) => {
                self.current = Some(value);
                self.refused = None;
            }
            Err(reason) => {
                let reason = format!("{reason}; the previous checkpoint stays");
                if self.refused.as_ref() != Some(&reason) {
                    tracing::warn!(reason = %reason, "checkpoint refused");
                }
                self.refused = Some(reason);
            }
        }
    }

    fn parse(&self, len: u64) -> Result<Value, String> {
        let limit = self.limit;
        let too_large = |len: u64| {
            format!("the checkpoint file is {len} bytes, more than the limit of {limit} bytes")
        };
        if len > limit as u64 {
            return Err(too_large(len));
        }
        // Read at most one byte more than the limit: the file may grow while it is read.
        let mut bytes = Vec::new();
        std::fs::File::open(&self.path)
            .and_then(|file| file.take(limit as u64 + 1).read_to_end(&mut bytes))
            .map_err(|e| format!("the checkpoint file cannot be read: {e}"))?;
        if bytes.len() > limit {
            return Err(too_large(bytes.len() as u64));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            format!(
                "the checkpoint file is not one complete JSON value ({e}): write another file \
                 and rename it over the checkpoint file"
            )
        })?;
        if value.is_null() {
            return Err("the checkpoint is null, which resumes nothing".to_owned());
        }
        let mut masked = value.clone();
        self.secrets.mask_json(&mut masked);
        if masked != value {
            return Err(
                "the checkpoint holds the value of a secret (checkpoints are stored in the \
                 workflow's history, and are not secret)"
                    .to_owned(),
            );
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn in_temp_dir(limit: usize, resumed_from: Option<Value>) -> Checkpoints {
        let dir = tea_harness::scratch_dir("checkpoint").expect("scratch dir");
        Checkpoints::new(
            dir.join("checkpoint.json"),
            limit,
            Arc::new(Secrets::new(["hunter2-secret"])),
            resumed_from,
        )
    }

    /// Writes `text` as a job should: another file, renamed over the checkpoint file.
    fn write(checkpoints: &Checkpoints, text: &str) {
        let partial = checkpoints.path.with_extension("tmp");
        std::fs::write(&partial, text).expect("write");
        std::fs::rename(&partial, &checkpoints.path).expect("rename");
    }

    #[test]
    fn the_latest_complete_checkpoint_is_sent() {
        let mut checkpoints = in_temp_dir(1024, None);
        assert_eq!(checkpoints.refresh(), (None, None), "nothing written yet");
        write(&checkpoints, r#"{"count": 1}"#);
        assert_eq!(checkpoints.refresh(), (Some(json!({"count": 1})), None));
        write(&checkpoints, r#"{"count": 2}"#);
        assert_eq!(checkpoints.refresh(), (Some(json!({"count": 2})), None));
    }

    #[test]
    fn the_checkpoint_resumed_from_is_sent_until_the_job_writes_one() {
        let mut checkpoints = in_temp_dir(1024, Some(json!({"count": 40})));
        assert_eq!(checkpoints.refresh(), (Some(json!({"count": 40})), None));
        write(&checkpoints, r#"{"count": 41}"#);
        assert_eq!(checkpoints.refresh(), (Some(json!({"count": 41})), None));
    }

    #[test]
    fn a_partly_written_file_is_never_sent_and_the_previous_checkpoint_stays() {
        let mut checkpoints = in_temp_dir(1024, None);
        write(&checkpoints, r#"{"count": 7}"#);
        checkpoints.refresh();
        // Caught in the middle of writing in place.
        std::fs::write(&checkpoints.path, r#"{"count": 8, "pa"#).expect("write");
        let (sent, refused) = checkpoints.refresh();
        assert_eq!(sent, Some(json!({"count": 7})));
        let refused = refused.expect("refused");
        assert!(refused.contains("not one complete JSON value"), "{refused}");
        assert!(
            refused.contains("the previous checkpoint stays"),
            "{refused}"
        );
        // Once complete, it is taken and the refusal is gone.
        std::fs::write(&checkpoints.path, r#"{"count": 8, "part": 2}"#).expect("write");
        assert_eq!(
            checkpoints.refresh(),
            (Some(json!({"count": 8, "part": 2})), None)
        );
    }

    #[test]
    fn an_oversized_checkpoint_is_refused_naming_the_limit_and_fails_nothing_else() {
        let mut checkpoints = in_temp_dir(32, None);
        write(&checkpoints, r#"{"count": 1}"#);
        checkpoints.refresh();
        write(
            &checkpoints,
            &format!(r#"{{"blob": "{}"}}"#, "x".repeat(64)),
        );
        let (sent, refused) = checkpoints.refresh();
        assert_eq!(sent, Some(json!({"count": 1})));
        let refused = refused.expect("refused");
        assert!(
            refused.contains("is 76 bytes, more than the limit of 32 bytes"),
            "{refused}"
        );
        // Within the limit again: taken.
        write(&checkpoints, r#"{"count": 3}"#);
        assert_eq!(checkpoints.refresh(), (Some(json!({"count": 3})), None));
    }

    #[test]
    fn a_checkpoint_holding_a_secret_or_null_is_refused() {
        let mut checkpoints = in_temp_dir(1024, Some(json!([1])));
        write(&checkpoints, r#"{"token": "x-hunter2-secret"}"#);
        let (sent, refused) = checkpoints.refresh();
        assert_eq!(sent, Some(json!([1])));
        assert!(refused.expect("refused").contains("secret"));
        write(&checkpoints, "null");
        let (sent, refused) = checkpoints.refresh();
        assert_eq!(sent, Some(json!([1])));
        assert!(refused.expect("refused").contains("null"));
    }

    #[test]
    fn the_resume_file_holds_the_same_json_value() {
        let path = tea_harness::scratch_dir("resume")
            .expect("scratch dir")
            .join("resume.json");
        let value = json!({"count": 40, "files": ["a", "b"], "nested": {"x": 1.5}});
        write_resume_file(&path, &value).expect("write");
        let read: Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("JSON");
        assert_eq!(read, value);
    }
}
