//! A network interface as `sys/class/net` and `proc` describe it: queues, IRQs and their
//! affinity, NUMA node, driver and offload features.

use std::collections::BTreeMap;

use crate::cpus;
use crate::host::Host;

/// One interrupt of the interface's device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    /// The IRQ number.
    pub number: u32,
    /// Its name in `proc/interrupts` (`eth0-TxRx-3`), if listed.
    pub name: Option<String>,
    /// The queue its name ends with (`…-3`), if any.
    pub queue: Option<usize>,
    /// `proc/irq/N/smp_affinity_list`.
    pub affinity: Vec<usize>,
}

/// An interface.
#[derive(Debug, Clone)]
pub struct Nic {
    /// Its name.
    pub name: String,
    /// Receive queues (`queues/rx-*`).
    pub rx_queues: usize,
    /// Each receive queue's `rps_cpus`, in queue order.
    pub rps_cpus: Vec<Vec<usize>>,
    /// The device's NUMA node (`device/numa_node`; -1 or absent: none).
    pub numa_node: Option<usize>,
    /// The driver (`device/uevent` `DRIVER=`, else `ethtool -i`).
    pub driver: Option<String>,
    /// The device's MSI/MSI-X interrupts, lowest first.
    pub irqs: Vec<Irq>,
    /// `ethtool -k` features (`on`/`off`, with `[fixed]` where the driver fixes them).
    pub features: BTreeMap<String, String>,
    /// The interface's MTU.
    pub mtu: Option<u32>,
}

impl Nic {
    /// Reads interface `name`; `None` when `sys/class/net/NAME` does not exist.
    pub fn read(host: &Host, name: &str) -> Option<Self> {
        let base = format!("sys/class/net/{name}");
        if !host.exists(&base) {
            return None;
        }
        let mut rx: Vec<usize> = host
            .list(&format!("{base}/queues"))
            .iter()
            .filter_map(|q| q.strip_prefix("rx-")?.parse().ok())
            .collect();
        rx.sort_unstable();
        let rps_cpus = rx
            .iter()
            .map(|q| {
                host.read(&format!("{base}/queues/rx-{q}/rps_cpus"))
                    .and_then(|m| cpus::parse_mask(&m))
                    .unwrap_or_default()
            })
            .collect();
        let ethtool = host.ethtool(name).unwrap_or_default();
        let driver = host
            .read(&format!("{base}/device/uevent"))
            .and_then(|u| {
                u.lines()
                    .find_map(|l| l.strip_prefix("DRIVER=").map(str::to_owned))
            })
            .or_else(|| ethtool.get("driver").cloned());
        let names = interrupt_names(host);
        let mut numbers: Vec<u32> = host
            .list(&format!("{base}/device/msi_irqs"))
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        numbers.sort_unstable();
        let irqs = numbers
            .into_iter()
            .map(|number| {
                let name = names.get(&number).cloned();
                let queue = name
                    .as_deref()
                    .and_then(|n| n.rsplit(['-', '_']).next())
                    .and_then(|q| q.parse().ok());
                Irq {
                    number,
                    queue,
                    name,
                    affinity: host
                        .read(&format!("proc/irq/{number}/smp_affinity_list"))
                        .and_then(|l| cpus::parse_list(&l))
                        .unwrap_or_default(),
                }
            })
            .collect();
        Some(Self {
            name: name.to_owned(),
            rx_queues: rx.len(),
            rps_cpus,
            numa_node: host
                .read(&format!("{base}/device/numa_node"))
                .and_then(|n| n.parse::<i64>().ok())
                .and_then(|n| usize::try_from(n).ok()),
            driver,
            irqs,
            features: ethtool
                .into_iter()
                .filter(|(_, v)| v.starts_with("on") || v.starts_with("off"))
                .collect(),
            mtu: host
                .read(&format!("{base}/mtu"))
                .and_then(|m| m.parse().ok()),
        })
    }

    /// Whether feature `name` is on; `None` when ethtool's output is not available or
    /// does not list it.
    pub fn feature(&self, name: &str) -> Option<bool> {
        self.features.get(name).map(|v| v.starts_with("on"))
    }

    /// The IRQs that serve queues (named `…-N`), or all of them when none is named so.
    pub fn queue_irqs(&self) -> Vec<&Irq> {
        let named: Vec<&Irq> = self.irqs.iter().filter(|i| i.queue.is_some()).collect();
        if named.is_empty() {
            self.irqs.iter().collect()
        } else {
            named
        }
    }
}

/// IRQ number → the last column of `proc/interrupts` (the handler's name).
fn interrupt_names(host: &Host) -> BTreeMap<u32, String> {
    let Some(text) = host.read("proc/interrupts") else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (n, rest) = l.trim().split_once(':')?;
            let number = n.trim().parse().ok()?;
            let name = rest.split_whitespace().last()?.to_owned();
            Some((number, name))
        })
        .collect()
}
