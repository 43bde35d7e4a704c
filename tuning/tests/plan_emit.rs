//! `plan`, `emit` (parsed back) and `apply` against the fixture trees.

mod common;

use common::{arg, copy_fixture, fixture, inspect, run};
use dtls_tune::emit::{parse_ini, parse_sysctl_conf, sysctl_conf, systemd_dropin, tuned_profile};
use dtls_tune::target::Overrides;

fn shards(n: usize) -> Overrides {
    Overrides {
        shards: Some(n),
        ..Overrides::default()
    }
}

#[test]
fn good_host_plan_puts_shards_on_isolated_cores_and_queue_irqs_on_them() {
    let i = inspect("good-host", Some("good-host.toml"), &Overrides::default());
    assert_eq!(i.plan.shard_cores, vec![1, 2, 3]);
    assert_eq!(i.plan.worker_cores, vec![0]);
    let irqs: Vec<(u32, usize)> = i.plan.irqs.iter().map(|(n, _, c)| (*n, *c)).collect();
    assert_eq!(
        irqs,
        vec![(41, 1), (42, 2), (43, 3)],
        "the misc vector is left alone"
    );
    assert!(
        i.plan.rps.iter().all(|(_, cpus)| cpus.is_empty()),
        "AF_XDP: RPS off"
    );
}

#[test]
fn plan_snippet_is_dtlsd_configuration() {
    let i = inspect("good-host", Some("good-host.toml"), &Overrides::default());
    let snippet = i.plan.config_snippet(&i.target);
    let table: toml::Table = toml::from_str(&snippet).expect("snippet is TOML");
    let serve = table["serve"].as_table().expect("[serve]");
    assert_eq!(serve["shards"].as_integer(), Some(3));
    assert_eq!(serve["cpus"].as_str(), Some("1,2,3"));
    assert_eq!(serve["control_threads"].as_integer(), Some(1));
    assert_eq!(serve["io"].as_str(), Some("xdp"));
    assert_eq!(serve["interface"].as_str(), Some("eth0"));
    // Every key is one dtlsd knows (its parser rejects unknown keys).
    let full = format!(
        "{snippet}listen = \"10.0.0.2:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"c:00112233445566778899aabbccddeeff\"]\n"
    );
    dtlsd::config::raw::parse_str(&full).expect("dtlsd parses the snippet");
}

#[test]
fn bad_host_plan_spreads_one_queue_with_rps_and_moves_the_irq() {
    let i = inspect("bad-host", None, &Overrides::default());
    // Physical cores first (1, 0), CPU 0 after 1, then the siblings.
    assert_eq!(i.plan.shard_cores, vec![1, 0, 2]);
    assert_eq!(i.plan.worker_cores, vec![3]);
    assert_eq!(i.plan.rps, vec![(0, vec![1, 0, 2])]);
    let script = i.plan.script(true);
    assert!(
        script.contains("systemctl disable --now irqbalance"),
        "{script}"
    );
    assert!(
        script.contains("echo 1 > /proc/irq/30/smp_affinity_list  # eth0"),
        "{script}"
    );
    assert!(
        script.contains("echo 7 > /sys/class/net/eth0/queues/rx-0/rps_cpus"),
        "{script}"
    );
    assert!(script.contains("taskset -pc 3 "), "{script}");
    assert!(
        i.plan
            .notes
            .iter()
            .any(|n| n.contains("1 receive queues for 3 shards"))
    );
}

#[test]
fn plan_with_fewer_shards_avoids_siblings() {
    let i = inspect("bad-host", None, &shards(2));
    assert_eq!(i.plan.shard_cores, vec![1, 0]);
    let report = i.check();
    assert_eq!(
        report.finding("cpu.smt").map(|f| f.status),
        Some(dtls_tune::checks::Status::Ok)
    );
}

#[test]
fn plan_script_is_valid_shell() {
    let out = run(&["plan", "--root", &arg("bad-host"), "--shards", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("plan.sh");
    let snippet = dir.path().join("plan.toml");
    let out = run(&[
        "plan",
        "--root",
        &arg("bad-host"),
        "--script",
        &script.display().to_string(),
        "--snippet",
        &snippet.display().to_string(),
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("note: eth0 has 1 receive queues"));
    let check = std::process::Command::new("sh")
        .arg("-n")
        .arg(&script)
        .status()
        .expect("sh runs");
    assert!(check.success(), "sh -n rejects the script");
    let snippet = std::fs::read_to_string(&snippet).expect("snippet written");
    assert!(snippet.contains("cpus = \"1,0,2\""), "{snippet}");
}

#[test]
fn emit_sysctl_parses_back_to_existing_keys() {
    let i = inspect("bad-host", None, &Overrides::default());
    let text = sysctl_conf(&i.sysctls());
    let pairs = parse_sysctl_conf(&text).expect("sysctl.d syntax");
    let expect = [
        ("net.core.rmem_max", "8388608"),
        ("net.core.wmem_max", "8388608"),
        ("net.core.netdev_max_backlog", "8192"),
        ("net.core.netdev_budget", "600"),
        // Already above what we ask for: kept.
        ("net.core.netdev_budget_usecs", "8000"),
        ("net.ipv4.udp_mem", "1000 6144 12288"),
    ];
    let got: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(got, expect);
    for (key, _) in &pairs {
        let path = fixture("bad-host").join(dtls_tune::host::sysctl_path(key));
        assert!(path.exists(), "{key} is a real sysctl of the fixture");
    }
}

#[test]
fn sysctl_parser_rejects_garbage() {
    assert!(parse_sysctl_conf("net.core.rmem_max 5\n").is_err());
    assert!(parse_sysctl_conf("bad key = 5\n").is_err());
    assert_eq!(
        parse_sysctl_conf("# c\n; c\n-net.core.rmem_max = 5\n").expect("parses"),
        vec![("net.core.rmem_max".to_owned(), "5".to_owned())]
    );
}

#[test]
fn emit_tuned_parses_back() {
    let i = inspect("bad-host", None, &Overrides::default());
    let text = tuned_profile(&i.sysctls(), &i.plan);
    let entries = parse_ini(&text).expect("INI syntax");
    let get = |section: &str, key: &str| {
        entries
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, v)| v.as_str())
    };
    assert_eq!(get("cpu", "governor"), Some("performance"));
    assert_eq!(get("irqbalance", "banned_cpus"), Some("0-2"));
    assert_eq!(get("sysctl", "net.core.rmem_max"), Some("8388608"));
    assert_eq!(
        get("bootloader", "cmdline_dtlsd"),
        Some("isolcpus=managed_irq,domain,0-2 nohz_full=0-2")
    );
    let sysctls: Vec<_> = entries.iter().filter(|(s, _, _)| s == "sysctl").collect();
    assert_eq!(sysctls.len(), i.sysctls().len());
}

#[test]
fn emit_systemd_for_af_xdp_grants_what_xdp_needs() {
    let i = inspect("bad-host", Some("bad-host-xdp.toml"), &Overrides::default());
    let text = systemd_dropin(&i.plan, &i.target, &i.topology);
    let entries = parse_ini(&text).expect("INI syntax");
    assert!(entries.iter().all(|(s, _, _)| s == "Service"));
    let get = |key: &str| {
        entries
            .iter()
            .find(|(_, k, _)| k == key)
            .map(|(_, _, v)| v.as_str())
    };
    // Shards on 1 and 0, two handshake workers (dtlsd's default here) on 2 and 3.
    assert_eq!(get("CPUAffinity"), Some("0-3"));
    assert_eq!(get("LimitMEMLOCK"), Some("infinity"));
    assert_eq!(get("RestrictAddressFamilies"), Some("AF_XDP"));
    assert!(get("AmbientCapabilities").is_some_and(|c| c.contains("CAP_BPF")));
    let socket = inspect("bad-host", None, &Overrides::default());
    let text = systemd_dropin(&socket.plan, &socket.target, &socket.topology);
    let entries = parse_ini(&text).expect("INI syntax");
    assert!(
        entries
            .iter()
            .all(|(_, k, _)| k != "LimitMEMLOCK" && k != "AmbientCapabilities")
    );
}

#[test]
fn emit_writes_to_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("60-dtlsd.conf");
    let status = run(&[
        "emit",
        "--sysctl",
        "--root",
        &arg("bad-host"),
        "--out",
        &out.display().to_string(),
    ]);
    assert!(status.status.success());
    let text = std::fs::read_to_string(&out).expect("written");
    assert!(parse_sysctl_conf(&text).is_ok_and(|p| p.len() == 6));
    let none = run(&["emit", "--root", &arg("bad-host")]);
    assert!(
        !none.status.success(),
        "one of --sysctl, --tuned, --systemd is required"
    );
}

#[test]
fn apply_refuses_without_yes_and_changes_nothing() {
    let root = copy_fixture("bad-host");
    let rmem = root.path().join("proc/sys/net/core/rmem_max");
    let out = run(&["apply", "--root", &root.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("-net.core.rmem_max = 212992\n+net.core.rmem_max = 8388608"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("without --yes"));
    assert_eq!(std::fs::read_to_string(&rmem).expect("read"), "212992\n");
}

#[test]
fn apply_yes_writes_the_sysctls_then_has_nothing_left() {
    let root = copy_fixture("bad-host");
    let root_arg = root.path().display().to_string();
    let out = run(&["apply", "--yes", "--root", &root_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("applied 5 sysctls"));
    let read = |k: &str| {
        std::fs::read_to_string(root.path().join(dtls_tune::host::sysctl_path(k))).expect("read")
    };
    assert_eq!(read("net.core.rmem_max"), "8388608\n");
    assert_eq!(read("net.ipv4.udp_mem"), "1000 6144 12288\n");
    assert_eq!(
        read("net.core.netdev_budget_usecs"),
        "8000\n",
        "not lowered"
    );
    let again = run(&["apply", "--yes", "--root", &root_arg]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        "nothing to change\n"
    );
    // And the checks it answers now pass.
    let report = dtls_tune::Inspection::new(root.path(), None, &Overrides::default())
        .expect("inspects")
        .check();
    for id in [
        "net.rmem_max",
        "net.wmem_max",
        "net.udp_mem",
        "net.netdev_max_backlog",
    ] {
        assert_eq!(
            report.finding(id).map(|f| f.status),
            Some(dtls_tune::checks::Status::Ok),
            "{id}"
        );
    }
}

#[test]
fn apply_on_a_tuned_host_changes_nothing() {
    let out = run(&[
        "apply",
        "--root",
        &arg("good-host"),
        "--config",
        &arg("good-host.toml"),
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nothing to change\n");
}

#[test]
fn shards_flag_keeps_configured_workers_and_rederives_default_ones() {
    let configured = inspect("good-host", Some("good-host.toml"), &shards(2));
    assert_eq!(
        configured.target.control_threads, 1,
        "control_threads = 1 in the file"
    );
    assert_eq!(configured.plan.shard_cores, vec![1, 2]);
    // The isolated CPU the shards leave, not a shard's sibling (5, 6).
    assert_eq!(configured.plan.worker_cores, vec![3]);
    // Without a file: dtlsd's default, the CPUs the shards leave (4 - 2).
    let default = inspect("bad-host", None, &shards(2));
    assert_eq!(default.target.control_threads, 2);
    assert_eq!(default.plan.worker_cores.len(), 2);
}
