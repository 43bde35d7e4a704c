//! The data-plane I/O keys: `io_batch`, `uring_buffers`, `gso`, `socket_recv_buffer`,
//! `socket_send_buffer` (bounds, the ring's power-of-two rule, the flags that override
//! them, and what a restart needs).

use super::*;

#[test]
fn io_keys_out_of_bounds_name_their_key_and_bounds() {
    let mut raw = psk_only_serve();
    raw.io_batch = Some(0);
    raw.uring_buffers = Some(8192);
    raw.socket_recv_buffer = Some(1024);
    raw.socket_send_buffer = Some((1 << 30) + 1);
    let l = lines(validate_serve(raw));
    assert!(
        has(
            &l,
            "serve.io_batch:",
            "0 is out of range: must be between 1 and 1024"
        ),
        "{l:?}"
    );
    assert!(
        has(&l, "serve.uring_buffers:", "between 1 and 4096"),
        "{l:?}"
    );
    assert!(
        has(
            &l,
            "serve.socket_recv_buffer:",
            "between 4096 and 1073741824"
        ),
        "{l:?}"
    );
    assert!(
        has(
            &l,
            "serve.socket_send_buffer:",
            "1073741825 is out of range"
        ),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.io_batch = Some(1025);
    assert!(has(&lines(validate_serve(raw)), "serve.io_batch:", "1025"));
}

#[test]
fn uring_buffers_must_be_a_power_of_two_holding_a_batch() {
    let mut raw = psk_only_serve();
    raw.uring_buffers = Some(96);
    let l = lines(validate_serve(raw));
    assert!(
        has(
            &l,
            "serve.uring_buffers:",
            "96 is not usable: must be a power of two"
        ),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.io_batch = Some(128);
    raw.uring_buffers = Some(64);
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.uring_buffers:", "must be at least io_batch"),
        "{l:?}"
    );
    // Without the key, a batch larger than the default ring gets a ring that holds it.
    let mut raw = psk_only_serve();
    raw.io_batch = Some(100);
    let s = validate_serve(raw).expect("valid");
    assert_eq!(
        (s.tuning.data_io.batch, s.tuning.data_io.uring_buffers),
        (100, 128)
    );
    let mut raw = psk_only_serve();
    raw.io_batch = Some(8);
    let s = validate_serve(raw).expect("valid");
    assert_eq!(
        (s.tuning.data_io.batch, s.tuning.data_io.uring_buffers),
        (8, 64)
    );
}

#[test]
fn io_keys_are_connect_keys_too_and_flags_override_them() {
    let base = "listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
                insecure_skip_verify = true\n";
    let file = connect_toml(&format!(
        "{base}io_batch = 16\nuring_buffers = 16\ngso = true\nsocket_recv_buffer = 65536\n\
         socket_send_buffer = 131072\n"
    ));
    let c = validate_connect(file.clone()).expect("valid");
    assert_eq!(
        c.tuning.data_io,
        DataIo {
            batch: 16,
            uring_buffers: 16,
            gso: true,
            recv_buffer: 65_536,
            send_buffer: 131_072,
        }
    );
    let flags = ConnectFlags {
        tuning: TuningFlags {
            io_batch: Some(64),
            uring_buffers: Some(512),
            no_gso: true,
            socket_recv_buffer: Some(4096),
            ..TuningFlags::default()
        },
        ..ConnectFlags::default()
    };
    let c = validate_connect(merge_connect(file, flags)).expect("valid");
    assert_eq!(
        c.tuning.data_io,
        DataIo {
            batch: 64,
            uring_buffers: 512,
            gso: false,
            recv_buffer: 4096,
            send_buffer: 131_072,
        }
    );
    let e =
        validate_connect(connect_toml(&format!("{base}io_batch = 2000\n"))).expect_err("too large");
    assert!(e.to_string().contains("connect.io_batch"), "{e}");
    // A wrong type names the key too.
    let e = parse_str("[serve]\ngso = \"off\"\n").expect_err("not a boolean");
    assert_eq!(e.key.as_deref(), Some("serve.gso"));
}

#[test]
fn changing_an_io_key_needs_a_restart() {
    let a = validate_serve(psk_only_serve()).expect("valid");
    let mut raw = psk_only_serve();
    raw.io_batch = Some(64);
    raw.gso = Some(false);
    raw.socket_send_buffer = Some(1 << 20);
    let b = validate_serve(raw).expect("valid");
    assert_eq!(
        a.restart_required(&b),
        vec!["io_batch", "gso", "socket_send_buffer"]
    );
}
