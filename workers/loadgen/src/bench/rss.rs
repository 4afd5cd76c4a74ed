//! The resident memory of the stack's workers, read from /proc after a run. Which
//! processes are the workers is [`procs`](super::procs)' business.

use serde::Serialize;

use super::procs::{self, Component, Stack};

#[derive(Debug, Clone, Serialize)]
pub struct WorkerMemory {
    pub kind: String,
    pub pid: u32,
    /// VmRSS, in KiB.
    pub rss_kib: u64,
}

/// The workers of `stack`, by kind then pid. A worker that exits before its status is read
/// is left out: the scan is a snapshot.
pub fn workers(stack: &Stack) -> Vec<WorkerMemory> {
    procs::scan(stack)
        .into_iter()
        .filter_map(|process| {
            let Component::Worker(kind) = process.component else {
                return None;
            };
            let status = std::fs::read_to_string(format!("/proc/{}/status", process.pid)).ok()?;
            Some(WorkerMemory {
                kind,
                pid: process.pid,
                rss_kib: vm_rss_kib(&status)?,
            })
        })
        .collect()
}

/// The resident memory of the stack's nats-server, in KiB (0 when it is not found).
pub fn nats_server_kib(stack: &Stack) -> u64 {
    procs::scan(stack)
        .into_iter()
        .filter(|p| p.component == Component::Nats)
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{}/status", p.pid)).ok())
        .filter_map(|status| vm_rss_kib(&status))
        .sum()
}

/// The resident memory of process `pid`, in KiB (`None` when it is gone).
pub fn process_kib(pid: u32) -> Option<u64> {
    vm_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmRSS:   13456 kB` line of /proc/<pid>/status.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// `order 14.2 MiB, stock 13.1 MiB, ...` for the terminal.
pub fn summary(workers: &[WorkerMemory]) -> String {
    if workers.is_empty() {
        return "no worker process found in /proc".into();
    }
    workers
        .iter()
        .map(|w| format!("{} {:.1} MiB", w.kind, w.rss_kib as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_from_a_status_file() {
        let status = "Name:\tshop\nVmPeak:\t  99 kB\nVmRSS:\t   13456 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(13456));
        assert_eq!(vm_rss_kib("Name:\tkthreadd\n"), None);
    }
}
