//! Request counters of the DigitalOcean provider: HTTP attempts, retries, transport errors
//! and statuses, per API operation.

use std::collections::BTreeMap;
use std::fmt;

/// The API operations this provider performs (the keys of [`RequestStats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Create,
    Get,
    List,
    Delete,
    GetDeployment,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Get => "get",
            Operation::List => "list",
            Operation::Delete => "delete",
            Operation::GetDeployment => "get_deployment",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters for one operation. `requests` counts HTTP attempts (retries included).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperationStats {
    pub requests: u64,
    /// Attempts that were followed by another attempt.
    pub retries: u64,
    /// Attempts that got no HTTP status (timeout, connection error, body read error).
    pub transport_errors: u64,
    /// Attempts by HTTP status code.
    pub statuses: BTreeMap<u16, u64>,
}

/// A snapshot of the provider's request counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestStats {
    pub operations: BTreeMap<Operation, OperationStats>,
}

impl RequestStats {
    /// HTTP attempts made for `op`.
    pub fn requests(&self, op: Operation) -> u64 {
        self.operations.get(&op).map_or(0, |s| s.requests)
    }

    /// HTTP attempts made for all operations.
    pub fn total_requests(&self) -> u64 {
        self.operations.values().map(|s| s.requests).sum()
    }

    /// Retries across all operations.
    pub fn total_retries(&self) -> u64 {
        self.operations.values().map(|s| s.retries).sum()
    }

    /// Responses with `status` across all operations.
    pub fn status_count(&self, status: u16) -> u64 {
        self.operations
            .values()
            .filter_map(|s| s.statuses.get(&status))
            .sum()
    }

    /// Responses by status across all operations.
    pub fn statuses(&self) -> BTreeMap<u16, u64> {
        let mut all = BTreeMap::new();
        for s in self.operations.values() {
            for (code, n) in &s.statuses {
                *all.entry(*code).or_insert(0) += n;
            }
        }
        all
    }
}
