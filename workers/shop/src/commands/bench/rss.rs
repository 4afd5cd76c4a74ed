//! The resident memory of the running workers, read from /proc: every process of a `shop`
//! binary whose first argument is `goods`, `stock` or `order`.
//!
//! Several stacks can run on one machine (the test suite runs one set of workers per
//! test), so a process counts only when its own database URL setting, if it has one in its
//! environment, names the database this bench uses for that kind of worker.

use std::path::Path;

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Serialize)]
pub struct WorkerMemory {
    pub kind: String,
    pub pid: u32,
    /// VmRSS, in KiB.
    pub rss_kib: u64,
}

/// The workers of this bench's stack, by kind then pid. Processes that vanish or cannot be
/// read while the scan runs are skipped: the scan is a snapshot, not an inventory.
pub fn workers(config: &Config) -> Vec<WorkerMemory> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<WorkerMemory> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| worker(config, pid))
        .collect();
    found.sort_by(|a, b| (&a.kind, a.pid).cmp(&(&b.kind, b.pid)));
    found
}

fn worker(config: &Config, pid: u32) -> Option<WorkerMemory> {
    let dir = Path::new("/proc").join(pid.to_string());
    let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
    let program = args.next()?;
    if Path::new(program.as_ref()).file_name()? != "shop" {
        return None;
    }
    let kind = args.next()?.into_owned();
    let ours = match kind.as_str() {
        "goods" => &config.goods.database_url,
        "stock" => &config.stock.database_url,
        "order" => &config.order.database_url,
        _ => return None,
    };
    let setting = format!("SHOP_{}__DATABASE_URL=", kind.to_uppercase());
    if let Ok(environ) = std::fs::read(dir.join("environ")) {
        let theirs = environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(setting.as_bytes()));
        if theirs.is_some_and(|url| url != ours.as_bytes()) {
            return None;
        }
    }
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    Some(WorkerMemory {
        kind,
        pid,
        rss_kib: vm_rss_kib(&status)?,
    })
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

    #[test]
    fn the_scan_never_lists_a_process_that_is_not_a_worker() {
        // This test process is not a shop worker; the scan must simply not list it.
        let config = Config::default();
        assert!(workers(&config).iter().all(|w| w.pid != std::process::id()));
    }
}
