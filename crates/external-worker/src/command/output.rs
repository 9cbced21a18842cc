//! The job's output and the files it reports through: each stream read line by line (lines
//! cut at a bound, secrets masked), counted and kept as a bounded tail; the progress file and
//! the result file read and masked.

use std::{
    collections::VecDeque,
    path::Path,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    task::JoinHandle,
};

use super::{JobReport, OutputLine, Stream};
use crate::mask::Secrets;

/// The longest output line kept whole; longer lines are cut (and counted in full).
pub(super) const MAX_LINE_BYTES: usize = 16 * 1024;

/// Counters and the tail, written by the stream readers.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) stdout_lines: u64,
    pub(super) stderr_lines: u64,
    pub(super) bytes: u64,
    pub(super) tail: VecDeque<OutputLine>,
    tail_bytes: usize,
}

impl Output {
    fn push(&mut self, stream: Stream, line: String, raw_len: usize, limit: usize) {
        match stream {
            Stream::Stdout => self.stdout_lines += 1,
            Stream::Stderr => self.stderr_lines += 1,
        }
        self.bytes += raw_len as u64;
        self.tail_bytes += line.len();
        self.tail.push_back(OutputLine { stream, line });
        while self.tail_bytes > limit {
            match self.tail.pop_front() {
                Some(old) => self.tail_bytes -= old.line.len(),
                None => break,
            }
        }
    }
}

pub(super) fn read_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    which: Stream,
    output: Arc<Mutex<Output>>,
    tail_limit: usize,
    secrets: Arc<Secrets>,
    log_line: Arc<impl Fn(Stream, &str) + Send + Sync + 'static>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match read_line_bounded(&mut reader, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(raw_len) => {
                    let cut = buf.len() < raw_len;
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let text = String::from_utf8_lossy(&buf);
                    let line = if cut {
                        secrets.mask_cut(&text)
                    } else {
                        secrets.mask(&text).into_owned()
                    };
                    log_line(which, &line);
                    output
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(which, line, raw_len, tail_limit);
                }
            }
        }
    })
}

/// Reads one line, keeping at most [`MAX_LINE_BYTES`] of it in `buf`; returns the line's
/// full length in bytes (0 at the end of the stream).
async fn read_line_bounded(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let (chunk, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..=i], true),
            None => (available, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len();
        total += used;
        reader.consume(used);
        if done {
            return Ok(total);
        }
    }
}

pub(super) fn read_report(path: &Path, secrets: &Secrets) -> Option<JobReport> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() > 4096 {
        return None;
    }
    let mut report: JobReport = serde_json::from_slice(&bytes).ok()?;
    report.fraction = report
        .fraction
        .filter(|f| f.is_finite())
        .map(|f| f.clamp(0.0, 1.0));
    if let Some(message) = &mut report.message {
        *message = secrets.mask(message).into_owned();
    }
    if let Some(message) = &mut report.message
        && message.len() > 512
    {
        let mut end = 512;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    Some(report)
}

pub(super) fn read_result(
    path: &Path,
    limit: usize,
    secrets: &Secrets,
) -> (Option<serde_json::Value>, Option<String>) {
    let Ok(metadata) = std::fs::metadata(path) else {
        return (None, None);
    };
    if metadata.len() > limit as u64 {
        return (
            None,
            Some(format!(
                "the job's result file is {} bytes, more than the limit of {limit} bytes",
                metadata.len()
            )),
        );
    }
    match std::fs::read(path).map(|bytes| serde_json::from_slice(&bytes)) {
        Ok(Ok(mut value)) => {
            secrets.mask_json(&mut value);
            (Some(value), None)
        }
        Ok(Err(e)) => (
            None,
            Some(format!("the job's result file is not JSON: {e}")),
        ),
        Err(e) => (
            None,
            Some(format!("the job's result file cannot be read: {e}")),
        ),
    }
}
