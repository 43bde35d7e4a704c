//! Unit tests of the trial plan, the ranking and the written configuration.

use super::*;

#[test]
fn coarse_shards_double_up_to_the_maximum() {
    assert_eq!(coarse_shards(1), vec![1]);
    assert_eq!(coarse_shards(6), vec![1, 2, 4, 6]);
    assert_eq!(coarse_shards(8), vec![1, 2, 4, 8]);
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("soon").is_err());
}

#[test]
fn best_prefers_rate_then_fewer_shards() {
    let t = |io, shards, pps| Trial {
        io,
        shards,
        data_io: DataIo::default(),
        pps,
        server_ns: 0.0,
        loadgen_ns: 0.0,
        p99_ns: 0,
    };
    let trials = [
        t(IoChoice::Mmsg, 1, 10.0),
        t(IoChoice::Uring, 2, 20.0),
        t(IoChoice::Uring, 1, 20.0),
    ];
    let b = best(&trials).expect("a best");
    assert_eq!((b.io, b.shards), (IoChoice::Uring, 1));
}

fn point(io: IoChoice, data_io: DataIo) -> Trial {
    Trial {
        io,
        shards: 1,
        data_io,
        pps: 1.0,
        server_ns: 0.0,
        loadgen_ns: 0.0,
        p99_ns: 0,
    }
}

#[test]
fn candidates_keep_the_ring_holding_a_batch_and_stay_in_bounds() {
    let d = DataIo::default();
    // A batch of 128 grows the ring to 128.
    let batches = candidates(Knob::Batch, &point(IoChoice::Uring, d), false);
    let got: Vec<(usize, u16)> = batches.iter().map(|c| (c.batch, c.uring_buffers)).collect();
    assert_eq!(got, vec![(8, 64), (32, 64), (128, 128)]);
    // Rings below the batch are left out; mmsg has no ring to try.
    let big = DataIo {
        batch: 128,
        uring_buffers: 128,
        ..d
    };
    let rings: Vec<u16> = candidates(Knob::UringBuffers, &point(IoChoice::Uring, big), false)
        .iter()
        .map(|c| c.uring_buffers)
        .collect();
    assert_eq!(rings, vec![256, 1024]);
    assert!(candidates(Knob::UringBuffers, &point(IoChoice::Mmsg, d), false).is_empty());
    // Neighbours: half and double, within the keys' bounds.
    let one = DataIo { batch: 1, ..d };
    let n: Vec<usize> = candidates(Knob::Batch, &point(IoChoice::Mmsg, one), true)
        .iter()
        .map(|c| c.batch)
        .collect();
    assert_eq!(n, vec![2]);
    let huge = DataIo {
        recv_buffer: 1 << 30,
        send_buffer: 1 << 30,
        ..d
    };
    let n: Vec<usize> = candidates(Knob::SocketBuffers, &point(IoChoice::Mmsg, huge), true)
        .iter()
        .map(|c| c.recv_buffer)
        .collect();
    assert_eq!(n, vec![1 << 29]);
    assert_eq!(worker_candidates(4, Some(4), true), vec![3]);
    assert_eq!(worker_candidates(3, None, false), vec![1, 2, 3]);
}

#[test]
fn tuned_config_writes_only_the_knobs_tried() {
    let dir = std::env::temp_dir().join(format!("dtls-tune-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let base = dir.join("base.toml");
    std::fs::write(
        &base,
        "[connect]\nlisten = \"127.0.0.1:5000\"\nio_batch = 16\n",
    )
    .expect("write");
    let best = point(
        IoChoice::Mmsg,
        DataIo {
            batch: 64,
            gso: false,
            ..DataIo::default()
        },
    );
    let text = tuned_config(&base, &best, None, &[Knob::Gso]).expect("tuned");
    let doc: toml::Table = toml::from_str(&text).expect("TOML");
    let t = doc["connect"].as_table().expect("table");
    assert_eq!(t["gso"].as_bool(), Some(false));
    // Not tried: the base's value stays, no key is added.
    assert_eq!(t["io_batch"].as_integer(), Some(16));
    assert!(!t.contains_key("socket_recv_buffer"));
    assert!(!t.contains_key("control_threads"));
    let workers = HandshakeTrial {
        control_threads: 3,
        rate: 1.0,
        per_cpu_s: None,
        failed: 0,
    };
    let text = tuned_config(&base, &best, Some(&workers), &[Knob::Batch]).expect("tuned");
    let doc: toml::Table = toml::from_str(&text).expect("TOML");
    let t = doc["connect"].as_table().expect("table");
    assert_eq!(t["io_batch"].as_integer(), Some(64));
    assert_eq!(t["uring_buffers"].as_integer(), Some(64));
    assert_eq!(t["control_threads"].as_integer(), Some(3));
    let _ = std::fs::remove_dir_all(&dir);
}
