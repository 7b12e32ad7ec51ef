//! This machine as a client node: CPU (cores × frequency, MHz), memory and attributes from
//! sysinfo, named as Nomad's fingerprinters name them (`kernel.name`, `cpu.arch`, …).

use std::collections::BTreeMap;

use caravan_agent_core::jobs::Node;

/// The CPU (MHz), memory (MiB) and attributes of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Total CPU: the cores' frequencies summed (2,000 MHz per core when unknown).
    pub cpu_mhz: u64,
    /// Total memory (1 GiB when unknown).
    pub memory_mb: u64,
    /// `kernel.name`, `kernel.version`, `os.name`, `os.version`, `cpu.arch`, `cpu.numcores`,
    /// `cpu.totalcompute`, `memory.totalbytes`, `unique.hostname`.
    pub attributes: BTreeMap<String, String>,
}

/// Reads this machine.
pub fn machine() -> Machine {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let (mhz, memory_bytes) = match sysinfo::System::new() {
        Ok(mut sys) => {
            sys.refresh_cpu_all();
            sys.refresh_memory();
            let mhz: u64 = sys.cpus().iter().map(|c| c.frequency()).sum();
            (mhz, sys.total_memory())
        }
        Err(e) => {
            tracing::warn!(target: "client", error = %e, "cannot read CPU and memory; assuming 1 GiB");
            (0, 1 << 30)
        }
    };
    let cpu_mhz = if mhz == 0 {
        cores.saturating_mul(2000)
    } else {
        mhz
    };
    let mut attributes = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        if !v.is_empty() {
            attributes.insert(k.to_string(), v);
        }
    };
    put("kernel.name", std::env::consts::OS.to_string());
    put(
        "kernel.version",
        sysinfo::System::kernel_version().unwrap_or_default(),
    );
    put("os.name", sysinfo::System::name().unwrap_or_default());
    put(
        "os.version",
        sysinfo::System::os_version().unwrap_or_default(),
    );
    put("cpu.arch", std::env::consts::ARCH.to_string());
    put("cpu.numcores", cores.to_string());
    put("cpu.totalcompute", cpu_mhz.to_string());
    put("memory.totalbytes", memory_bytes.to_string());
    put(
        "unique.hostname",
        sysinfo::System::host_name().unwrap_or_default(),
    );
    Machine {
        cpu_mhz,
        memory_mb: memory_bytes >> 20,
        attributes,
    }
}

/// A fresh node secret (a random UUID, as Nomad's `Node.SecretID`).
pub fn new_secret() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// This machine as node `id` in `datacenter`, with a fresh secret; the caller sets its name,
/// class and meta (and replaces the secret with a persisted one).
pub fn node(id: &str, datacenter: &str) -> Node {
    let m = machine();
    Node {
        id: id.to_string(),
        name: id.to_string(),
        datacenter: datacenter.to_string(),
        node_class: String::new(),
        meta: BTreeMap::new(),
        cpu: m.cpu_mhz,
        memory_mb: m.memory_mb,
        status: "ready".into(),
        down_since: None,
        secret_id: new_secret(),
        attributes: m.attributes,
        create_index: 0,
        modify_index: 0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_a_kernel_an_arch_and_capacity() {
        let n = super::node("n1", "dc1");
        assert_eq!(n.attributes["kernel.name"], std::env::consts::OS);
        assert_eq!(n.attributes["cpu.arch"], std::env::consts::ARCH);
        assert!(n.cpu > 0 && n.memory_mb > 0);
        assert_eq!(n.secret_id.len(), 36);
        assert_ne!(n.secret_id, super::new_secret());
        n.validate().unwrap();
    }
}
