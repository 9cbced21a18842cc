//! What this machine can give a local unit: its CPUs (as this process may use them) and its
//! memory. A run's `resources` on the local provider are a request checked against these,
//! refused when the machine is too small; processes are not limited to them.

use tea_contract::{Cpus, Resources, format_bytes};

use crate::{ProviderError, sizing::refusal};

/// Refuses a request for more CPUs or memory than this machine has.
pub(super) fn check_request(provider: &str, asked: &Resources) -> Result<(), ProviderError> {
    if let (Some(cpu), Some(have)) = (asked.cpu, machine_cpus())
        && cpu > have
    {
        return Err(refusal(
            provider,
            "cpu",
            &format!("{cpu} CPU"),
            &format!("this machine has {have} CPU"),
        ));
    }
    if let (Some(memory), Some(have)) = (asked.memory, machine_memory())
        && memory > have
    {
        return Err(refusal(
            provider,
            "memory",
            &format_bytes(memory),
            &format!("this machine has {}", format_bytes(have)),
        ));
    }
    Ok(())
}

/// The CPUs this process may run on (affinity and cgroup quota included).
fn machine_cpus() -> Option<Cpus> {
    let cpus = std::thread::available_parallelism().ok()?;
    Some(Cpus::from_millis(u64::try_from(cpus.get()).ok()? * 1000))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    mem_total(&meminfo)
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_above_this_machine_is_refused_naming_what_it_has() {
        let have = machine_cpus().expect("this machine's CPUs");
        let fits = Resources {
            cpu: Some(have),
            memory: Some(1 << 20),
            ..Default::default()
        };
        assert!(check_request("local", &fits).is_ok());
        let too_many = Resources {
            cpu: Some(Cpus::from_millis(have.millis() + 1000)),
            ..Default::default()
        };
        let err = check_request("local", &too_many).unwrap_err();
        assert!(err.message.contains("`resources.cpu`"), "{err}");
        assert!(
            err.message
                .contains(&format!("this machine has {have} CPU")),
            "{err}"
        );
        let too_much = Resources {
            memory: Some(machine_memory().expect("MemTotal") * 2),
            ..Default::default()
        };
        let err = check_request("local", &too_much).unwrap_err();
        assert!(err.message.contains("`resources.memory`"), "{err}");
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:        8048576 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(meminfo), Some(8_048_576 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
    }
}
