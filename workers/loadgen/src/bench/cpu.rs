//! Where the CPU goes: milliseconds of CPU per successful create for each component of the
//! stack (each worker kind, nats-server, PostgreSQL per database and the rest of it, and
//! the bench itself), from /proc read right before and right after a run.
//!
//! Everything shares one small machine, so throughput is bounded by the CPU all components
//! spend per create together: `1000 * cores / total` creates/s at most. CPU per create also
//! moves far less than creates/s when other load shares the cores: it is the figure to
//! compare across runs, and the split says which component to make cheaper.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};

use super::procs::{self, Component, Stack};

/// The CPU each process of the stack had used, in clock ticks, at one instant.
pub struct Sample {
    processes: BTreeMap<u32, (Component, u64)>,
    bench: u64,
}

/// Reads the CPU used so far by every process of `stack` and by the bench.
pub fn sample(stack: &Stack) -> Sample {
    let processes = procs::scan(stack)
        .into_iter()
        .map(|process| {
            let mut ticks = process.stat.own_ticks;
            if process.component == Component::Postmaster {
                // Backends that exited (a pool closing a connection) are no longer in
                // /proc; their CPU was added to the postmaster's cutime/cstime when it
                // reaped them, so this is where it is found.
                ticks += process.stat.children_ticks;
            }
            (process.pid, (process.component, ticks))
        })
        .collect();
    // The bench shares the cores with the stack: its own cost belongs in the total.
    let bench = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| procs::parse_stat(&stat))
        .map_or(0, |stat| stat.own_ticks);
    Sample { processes, bench }
}

/// CPU milliseconds per successful create, by component, between two samples.
#[derive(Debug, Clone)]
pub struct CpuPerCreate {
    /// In the order of [`keys`]: every component appears, a zero says it used nothing (or
    /// was not found).
    pub components: Vec<(String, f64)>,
    pub total: f64,
    pub cores: usize,
}

impl CpuPerCreate {
    /// None without a successful create: there is nothing to divide by.
    pub fn between(stack: &Stack, before: &Sample, after: &Sample, creates: u64) -> Option<Self> {
        if creates == 0 {
            return None;
        }
        let mut ticks: BTreeMap<String, u64> = BTreeMap::new();
        for (pid, (component, now)) in &after.processes {
            // A process not there before started during the run: all its CPU is the run's.
            let then = before
                .processes
                .get(pid)
                .filter(|(was, _)| was == component)
                .map_or(0, |(_, then)| *then);
            *ticks.entry(key(component)).or_default() += now.saturating_sub(then);
        }
        // A backend that exited during the run reached the postmaster's cutime with its
        // whole life; what it had used before the run is not the run's.
        let other = ticks.entry(key(&Component::PostgresOther)).or_default();
        for (pid, (component, then)) in &before.processes {
            if !after.processes.contains_key(pid)
                && matches!(component, Component::Database(_) | Component::PostgresOther)
            {
                *other = other.saturating_sub(*then);
            }
        }
        ticks.insert("bench".into(), after.bench.saturating_sub(before.bench));

        let per_create =
            |ticks: u64| ticks as f64 * 1000.0 / clock_ticks_per_second() / creates as f64;
        let components: Vec<(String, f64)> = keys(stack)
            .into_iter()
            .map(|key| {
                let ms = per_create(ticks.get(&key).copied().unwrap_or(0));
                (key, ms)
            })
            .collect();
        Some(CpuPerCreate {
            total: components.iter().map(|(_, ms)| ms).sum(),
            components,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// The creates/s the machine's cores could carry at this CPU cost, with nothing else
    /// running: the bound that CPU alone puts on throughput.
    pub fn creates_per_second_at_most(&self) -> f64 {
        1000.0 * self.cores as f64 / self.total.max(f64::MIN_POSITIVE)
    }
}

/// `cpu ms/create: order 0.12, ..., bench 0.10 | total 0.77 (2 cores: 2600 creates/s at
/// most)` for the terminal.
pub fn summary(cpu: Option<&CpuPerCreate>) -> String {
    let Some(cpu) = cpu else {
        return "cpu ms/create: no successful create to divide by".into();
    };
    let parts: Vec<String> = cpu
        .components
        .iter()
        .map(|(key, ms)| format!("{key} {ms:.2}"))
        .collect();
    format!(
        "cpu ms/create: {} | total {:.2} ({} cores: {:.0} creates/s at most)",
        parts.join(", "),
        cpu.total,
        cpu.cores,
        cpu.creates_per_second_at_most()
    )
}

/// The components in the order they are reported: the gateway and the workers along a
/// create's path, then
/// nats-server, PostgreSQL by database in the same order, the rest of it, the bench.
fn keys(stack: &Stack) -> Vec<String> {
    let mut keys: Vec<String> = std::iter::once(procs::GATEWAY)
        .chain(procs::KINDS)
        .map(str::to_owned)
        .collect();
    keys.push(key(&Component::Nats));
    keys.extend(
        stack
            .database_names()
            .into_iter()
            .map(|db| key(&Component::Database(db.to_owned()))),
    );
    keys.push(key(&Component::PostgresOther));
    keys.push("bench".into());
    keys
}

fn key(component: &Component) -> String {
    match component {
        Component::Worker(kind) => kind.clone(),
        Component::Nats => "nats".into(),
        Component::Database(db) => format!("pg {db}"),
        Component::Postmaster | Component::PostgresOther => "pg other".into(),
    }
}

/// `{"order": 0.12, ..., "bench": 0.10, "total": 0.77, "cores": 2,
/// "creates_per_second_at_most": 2600}`: the components as keys, as on the terminal.
impl Serialize for CpuPerCreate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.components.len() + 3))?;
        for (key, ms) in &self.components {
            map.serialize_entry(key, ms)?;
        }
        map.serialize_entry("total", &self.total)?;
        map.serialize_entry("cores", &self.cores)?;
        map.serialize_entry(
            "creates_per_second_at_most",
            &self.creates_per_second_at_most(),
        )?;
        map.end()
    }
}

/// Clock ticks per second, the unit of /proc/<pid>/stat's times: what
/// `sysconf(_SC_CLK_TCK)` answers, which the kernel hands every process in its auxiliary
/// vector as AT_CLKTCK (this crate does not link libc itself). 100 when it cannot be read:
/// the value on every common Linux.
pub(super) fn clock_ticks_per_second() -> f64 {
    const AT_CLKTCK: usize = 17;
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
        let word = std::mem::size_of::<usize>();
        // (key, value) pairs of native words.
        let read = |bytes: &[u8]| bytes.try_into().map(usize::from_ne_bytes).unwrap_or(0);
        auxv.chunks_exact(2 * word)
            .map(|pair| pair.split_at(word))
            .find_map(|(key, value)| (read(key) == AT_CLKTCK).then(|| read(value)))
            .filter(|ticks| *ticks > 0)
            .map_or(100.0, |ticks| ticks as f64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ticks_are_read_from_the_auxiliary_vector() {
        // 100 on every common Linux; what matters is that it is read and sane.
        let ticks = clock_ticks_per_second();
        assert!((10.0..=10_000.0).contains(&ticks), "{ticks}");
    }

    #[test]
    fn cpu_is_what_each_component_used_during_the_run_per_create() {
        let stack = Stack::of(&crate::BenchConfig::dev());
        let tick_ms = 1000.0 / clock_ticks_per_second();
        let sample = |processes: Vec<(u32, Component, u64)>, bench| Sample {
            processes: processes
                .into_iter()
                .map(|(pid, component, ticks)| (pid, (component, ticks)))
                .collect(),
            bench,
        };
        let order = || Component::Worker("order".into());
        let backend = || Component::Database("shop_order".into());
        let before = sample(
            vec![
                (1, order(), 100),
                (2, backend(), 50),
                (3, backend(), 30),
                (9, Component::Postmaster, 10),
            ],
            7,
        );
        // pid 3 exited: its 30 + 4 ticks reached the postmaster's children ticks.
        let after = sample(
            vec![
                (1, order(), 120),
                (2, backend(), 60),
                (4, Component::Nats, 10),
                (9, Component::Postmaster, 10 + 34),
            ],
            17,
        );
        let cpu = CpuPerCreate::between(&stack, &before, &after, 10).expect("creates");
        let ms = |key: &str| {
            cpu.components
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, ms)| *ms)
        };
        let close = |key: &str, ticks: f64| {
            let got = ms(key).expect(key);
            assert!((got - ticks * tick_ms / 10.0).abs() < 1e-9, "{key}: {got}");
        };
        close("order", 20.0);
        close("pg shop_order", 10.0);
        close("pg other", 4.0);
        close("nats", 10.0);
        close("bench", 10.0);
        close("goods", 0.0);
        assert!((cpu.total - 54.0 * tick_ms / 10.0).abs() < 1e-9);
        assert!(summary(Some(&cpu)).starts_with("cpu ms/create: gateway 0.00, order "));
        assert!(CpuPerCreate::between(&stack, &before, &after, 0).is_none());
    }
}
