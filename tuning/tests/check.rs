//! `check` against the good-host and bad-host fixture trees: each finding's status and fix.

mod common;

use common::{arg, inspect, run};
use dtls_tune::checks::{IDS, Status};
use dtls_tune::target::Overrides;

fn status(report: &dtls_tune::Report, id: &str) -> Status {
    report
        .finding(id)
        .unwrap_or_else(|| panic!("finding {id}"))
        .status
}

fn fix(report: &dtls_tune::Report, id: &str) -> String {
    report
        .finding(id)
        .and_then(|f| f.fix.clone())
        .unwrap_or_else(|| panic!("{id} has a fix"))
}

#[test]
fn every_id_is_reported_once_in_order() {
    for (root, config) in [("good-host", Some("good-host.toml")), ("bad-host", None)] {
        let report = inspect(root, config, &Overrides::default()).check();
        let ids: Vec<&str> = report.findings.iter().map(|f| f.id).collect();
        assert_eq!(ids, IDS.to_vec(), "{root}");
    }
}

#[test]
fn good_host_has_nothing_to_fix() {
    let report = inspect("good-host", Some("good-host.toml"), &Overrides::default()).check();
    for f in &report.findings {
        // Only the live probe is skipped under a fixture root.
        let expected = if f.id == "io_uring.probe" {
            Status::Skip
        } else {
            Status::Ok
        };
        assert!(
            f.status == expected,
            "{} is {:?}: {} ({})",
            f.id,
            f.status,
            f.observed,
            f.why
        );
        assert!(f.fix.is_none(), "{} has a fix", f.id);
    }
}

#[test]
fn live_probe_is_skipped_under_a_fixture_root() {
    let report = inspect("good-host", None, &Overrides::default()).check();
    assert_eq!(status(&report, "io_uring.probe"), Status::Skip);
}

#[test]
fn bad_host_kernel_and_io_uring() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    assert_eq!(status(&report, "kernel.version"), Status::Warn);
    assert_eq!(status(&report, "io_uring.sysctl"), Status::Warn);
    assert_eq!(
        fix(&report, "io_uring.sysctl"),
        "sysctl -w kernel.io_uring_disabled=0"
    );
    assert_eq!(
        status(&report, "limits.memlock"),
        Status::Ok,
        "8 MiB is plenty without AF_XDP"
    );
}

#[test]
fn io_uring_disabled_fails_when_uring_is_required() {
    let dir = common::copy_fixture("bad-host");
    let config = dir.path().join("uring.toml");
    std::fs::write(
        &config,
        "[serve]\nlisten = \"10.0.0.2:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"c:00112233445566778899aabbccddeeff\"]\nio = \"uring\"\n",
    )
    .expect("write config");
    let report = dtls_tune::Inspection::new(dir.path(), Some(&config), &Overrides::default())
        .expect("inspects")
        .check();
    assert_eq!(status(&report, "io_uring.sysctl"), Status::Fail);
    assert_eq!(status(&report, "kernel.version"), Status::Fail);
}

#[test]
fn bad_host_socket_buffers_and_udp_memory() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    assert_eq!(status(&report, "net.rmem_max"), Status::Warn);
    assert_eq!(
        fix(&report, "net.rmem_max"),
        "sysctl -w net.core.rmem_max=8388608"
    );
    assert_eq!(
        fix(&report, "net.wmem_max"),
        "sysctl -w net.core.wmem_max=8388608"
    );
    // 3 shards × 8 MiB × 2 = 48 MiB = 12288 pages.
    assert_eq!(
        fix(&report, "net.udp_mem"),
        "sysctl -w net.ipv4.udp_mem=\"1000 6144 12288\""
    );
    assert_eq!(
        fix(&report, "net.netdev_max_backlog"),
        "sysctl -w net.core.netdev_max_backlog=8192"
    );
}

#[test]
fn bad_host_softnet_and_udp_counters() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    // 0x10 + 0x20 + 0x30 + 0x40 drops, 4 × 0x20 squeezes.
    assert_eq!(
        report
            .finding("softnet.dropped")
            .map(|f| f.observed.as_str()),
        Some("160")
    );
    assert_eq!(
        report
            .finding("softnet.time_squeeze")
            .map(|f| f.observed.as_str()),
        Some("128")
    );
    assert_eq!(
        fix(&report, "net.netdev_budget"),
        "sysctl -w net.core.netdev_budget=600 net.core.netdev_budget_usecs=4000"
    );
    assert_eq!(status(&report, "udp.rcvbuf_errors"), Status::Warn);
    assert_eq!(
        report
            .finding("udp.rcvbuf_errors")
            .map(|f| f.observed.as_str()),
        Some("1234")
    );
    // MemErrors > 0: the fix points at udp_mem.
    assert!(fix(&report, "udp.in_errors").contains("udp_mem"));
    assert_eq!(status(&report, "net.busy_poll"), Status::Warn);
}

#[test]
fn bad_host_conntrack_nearly_full_fails_with_notrack_rule() {
    let report = inspect("bad-host", Some("bad-host-xdp.toml"), &Overrides::default()).check();
    assert_eq!(status(&report, "net.conntrack"), Status::Fail);
    let fix = fix(&report, "net.conntrack");
    assert!(fix.contains("udp dport 4433 notrack"), "{fix}");
    assert!(fix.contains("udp sport 4433 notrack"), "{fix}");
}

#[test]
fn bad_host_cpu_findings() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    assert_eq!(status(&report, "cpu.aes"), Status::Warn);
    assert_eq!(status(&report, "cpu.governor"), Status::Warn);
    assert!(
        fix(&report, "cpu.governor").starts_with("cpupower -c 0-2 frequency-set -g performance")
    );
    // 3 shards on 2 physical cores: two are siblings.
    assert_eq!(status(&report, "cpu.smt"), Status::Warn);
    assert!(fix(&report, "cpu.smt").contains("--shards 2"));
    assert_eq!(status(&report, "cpu.isolation"), Status::Warn);
    assert_eq!(status(&report, "cpu.irqbalance"), Status::Warn);
    assert!(fix(&report, "cpu.irqbalance").starts_with("systemctl disable --now irqbalance"));
}

#[test]
fn bad_host_nic_findings() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    assert_eq!(status(&report, "nic.queues"), Status::Warn);
    assert_eq!(status(&report, "nic.irq_affinity"), Status::Warn);
    assert_eq!(
        report
            .finding("nic.irq_affinity")
            .map(|f| f.observed.as_str()),
        Some("1 of 1 queue interrupts off plan")
    );
    // GRO is off and can be turned on; tx-udp-segmentation is fixed off by the driver.
    assert_eq!(
        fix(&report, "nic.offloads"),
        "ethtool -K eth0 generic-receive-offload on"
    );
    assert_eq!(
        fix(&report, "nic.udp_gro_forwarding"),
        "ethtool -K eth0 rx-udp-gro-forwarding on"
    );
    assert_eq!(status(&report, "nic.numa"), Status::Warn);
    assert_eq!(
        fix(&report, "nic.numa"),
        "set cpus = \"2-3\" (CPUs of node 1)"
    );
}

#[test]
fn xdp_findings_skip_without_af_xdp() {
    let report = inspect("bad-host", None, &Overrides::default()).check();
    for id in ["xdp.driver", "xdp.zerocopy", "xdp.queues"] {
        assert_eq!(status(&report, id), Status::Skip, "{id}");
    }
}

#[test]
fn bad_host_af_xdp_findings() {
    let report = inspect("bad-host", Some("bad-host-xdp.toml"), &Overrides::default()).check();
    assert_eq!(status(&report, "xdp.driver"), Status::Warn);
    assert_eq!(status(&report, "xdp.zerocopy"), Status::Warn);
    assert_eq!(status(&report, "xdp.queues"), Status::Fail);
    assert_eq!(fix(&report, "xdp.queues"), "ethtool -L eth0 combined 2");
    // 2 shards × 16 MiB of UMEM against an 8 MiB limit.
    assert_eq!(status(&report, "limits.memlock"), Status::Fail);
    assert!(
        report
            .finding("limits.memlock")
            .is_some_and(|f| f.why.contains("32 MiB"))
    );
}

#[test]
fn af_xdp_on_a_missing_interface_fails() {
    let report = inspect(
        "good-host",
        Some("good-host.toml"),
        &Overrides {
            interface: Some("nope0".to_owned()),
            ..Overrides::default()
        },
    )
    .check();
    assert_eq!(status(&report, "xdp.driver"), Status::Fail);
    assert_eq!(status(&report, "nic.queues"), Status::Skip);
}

#[test]
fn more_xdp_shards_than_queues_leave_nothing_unread_only_when_equal() {
    let more = Overrides {
        shards: Some(2),
        ..Overrides::default()
    };
    let report = inspect("good-host", Some("good-host.toml"), &more).check();
    assert_eq!(
        status(&report, "xdp.queues"),
        Status::Warn,
        "3 queues, 2 shards"
    );
    assert_eq!(fix(&report, "xdp.queues"), "ethtool -L eth0 combined 2");
}

#[test]
fn binary_exits_1_on_a_failure_and_0_without() {
    let good = run(&[
        "check",
        "--root",
        &arg("good-host"),
        "--config",
        &arg("good-host.toml"),
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(text.contains("[ok  ] net.rmem_max"), "{text}");
    let bad = run(&[
        "check",
        "--root",
        &arg("bad-host"),
        "--config",
        &arg("bad-host-xdp.toml"),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(text.contains("[fail] xdp.queues"), "{text}");
    assert!(text.contains("fix: ethtool -L eth0 combined 2"), "{text}");
}

#[test]
fn a_config_that_does_not_validate_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[serve]\nshards = 0\nno_such_key = 1\n").expect("write");
    let out = run(&[
        "check",
        "--root",
        &arg("good-host"),
        "--config",
        &config.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no_such_key"), "{err}");
}

#[test]
fn socket_buffer_keys_set_what_rmem_and_wmem_max_must_hold() {
    // bad-host's rmem_max and wmem_max are the kernel default, 212992 bytes.
    let dir = common::copy_fixture("bad-host");
    let config = dir.path().join("buffers.toml");
    let write = |recv: usize, send: usize| {
        std::fs::write(
            &config,
            format!(
                "[serve]\nlisten = \"10.0.0.2:4433\"\nbackend = \"127.0.0.1:9000\"\n\
                 psk = [\"c:00112233445566778899aabbccddeeff\"]\n\
                 socket_recv_buffer = {recv}\nsocket_send_buffer = {send}\n"
            ),
        )
        .expect("write config");
        dtls_tune::Inspection::new(dir.path(), Some(&config), &Overrides::default())
            .expect("inspects")
            .check()
    };
    // Asking for less than the cap: nothing to raise.
    let report = write(131_072, 65_536);
    assert_eq!(status(&report, "net.rmem_max"), Status::Ok);
    assert_eq!(status(&report, "net.wmem_max"), Status::Ok);
    // Asking for more: the fix raises the cap to exactly what the keys ask for.
    let report = write(33_554_432, 1_048_576);
    assert_eq!(
        fix(&report, "net.rmem_max"),
        "sysctl -w net.core.rmem_max=33554432"
    );
    assert_eq!(
        fix(&report, "net.wmem_max"),
        "sysctl -w net.core.wmem_max=1048576"
    );
}
