//! Unit tests: TOML parsing, validation and the flag merge.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::limits::Limits;
use super::merge::{ConnectFlags, ServeFlags, TuningFlags, merge_connect, merge_serve};
use super::raw::{RawConfig, parse_str};
use super::validate::{parse_psk, validate_connect, validate_serve};
use super::*;

/// A fresh directory holding two readable files, `a.pem` and `b.pem`.
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dtlsd-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    for f in ["a.pem", "b.pem"] {
        std::fs::write(dir.join(f), "x").expect("write scratch file");
    }
    dir
}

fn serve_toml(body: &str) -> RawServe {
    match parse_str(&format!("[serve]\n{body}")).expect("parses") {
        RawConfig::Serve(s) => s,
        RawConfig::Connect(_) => panic!("expected a serve table"),
    }
}

fn connect_toml(body: &str) -> RawConnect {
    match parse_str(&format!("[connect]\n{body}")).expect("parses") {
        RawConfig::Connect(c) => c,
        RawConfig::Serve(_) => panic!("expected a connect table"),
    }
}

fn psk_only_serve() -> RawServe {
    serve_toml("listen = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\npsk = [\"a:0011\"]\n")
}

/// The error lines of a failed validation.
fn lines(result: Result<impl std::fmt::Debug, ConfigErrors>) -> Vec<String> {
    result
        .expect_err("should be invalid")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn has(lines: &[String], prefix: &str, fragment: &str) -> bool {
    lines
        .iter()
        .any(|l| l.starts_with(prefix) && l.contains(fragment))
}

#[test]
fn every_serve_and_connect_key_parses_and_validates() {
    let dir = scratch();
    let d = dir.display();
    let serve = serve_toml(&format!(
        "listen = \"[::]:4433\"\nbackend = \"127.0.0.1:9000\"\ncert = \"{d}/a.pem\"\n\
         key = \"{d}/b.pem\"\npsk = [\"a:00ff\", \"b:c0ffee\"]\nclient_ca = \"{d}/a.pem\"\n\
         shards = 2\ncpus = \"0\"\nio = \"mmsg\"\nio_batch = 64\nuring_buffers = 256\ngso = false\n\
         socket_recv_buffer = 1048576\nsocket_send_buffer = 2097152\nmtu = 1200\nmetrics = \"127.0.0.1:9100\"\n\
         idle_timeout = 60\nkeepalive = 15\nlog_format = \"json\"\ntakeover = true\n\
         connection_id = true\nconnection_id_length = 12\nrrc = false\ndrain_timeout = 30\nversions = [\"1.2\"]\n\
         tls13_groups = [\"x25519mlkem768\"]\n\
         tls13_cipher_suites = [\"TLS_CHACHA20_POLY1305_SHA256\", \"TLS_AES_128_GCM_SHA256\"]\n"
    ));
    let s = validate_serve(serve).expect("valid serve config");
    assert_eq!(s.listen, vec!["[::]:4433".parse().expect("addr")]);
    assert_eq!(s.credentials.psks.len(), 2);
    assert_eq!(s.credentials.psks[1].key(), &[0xc0, 0xff, 0xee]);
    assert!(s.credentials.certificate.is_some());
    assert_eq!(s.credentials.client_ca, Some(dir.join("a.pem")));
    assert_eq!(
        s.tuning,
        Tuning {
            shards: Some(2),
            control_threads: None,
            cpus: Some(vec![0]),
            io: IoMode::Mmsg,
            data_io: DataIo {
                batch: 64,
                uring_buffers: 256,
                gso: false,
                recv_buffer: 1 << 20,
                send_buffer: 2 << 20,
            },
            interface: None,
            mtu: 1200,
            metrics: Some("127.0.0.1:9100".parse().expect("addr")),
            admin_socket: AdminSocket::Default,
            idle_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(15)),
            log_format: LogFormat::Json,
            limits: Limits::default(),
            takeover: true,
            dual_stack: false,
            run_as: None,
            connection_id: control::ConnectionIds::On { len: 12 },
            rrc: false,
            versions: vec![control::ProtocolVersion::Dtls1_2],
            tls13_groups: vec![control::NamedGroup::X25519Mlkem768],
            tls13_cipher_suites: vec![
                control::CipherSuite::Tls13Chacha20Poly1305Sha256,
                control::CipherSuite::Tls13Aes128GcmSha256,
            ],
        }
    );
    let connect = connect_toml(&format!(
        "listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\nca = \"{d}/a.pem\"\n\
         server_name = \"localhost\"\ninsecure_skip_verify = false\ncert = \"{d}/a.pem\"\n\
         key = \"{d}/b.pem\"\nshards = 1\nio = \"uring\"\nmtu = 9000\nmetrics = \"127.0.0.1:9101\"\n\
         idle_timeout = 10\nkeepalive = 9\nlog_format = \"human\"\ntakeover = false\n\
         connection_id = false\n"
    ));
    let c = validate_connect(connect).expect("valid connect config");
    assert!(matches!(
        c.trust,
        ServerTrust::Ca { ref server_name, .. } if server_name == "localhost"
    ));
    assert!(c.client_certificate.is_some());
    assert_eq!(c.tuning.io, IoMode::Uring);
    assert!(!c.tuning.takeover);
    assert_eq!(c.tuning.connection_id, control::ConnectionIds::Off);
}

#[test]
fn connection_id_keys_default_per_role_and_name_themselves_when_wrong() {
    // Serve asks for 8-byte CIDs, connect for none (it uses the server's).
    let s = validate_serve(psk_only_serve()).expect("valid");
    assert_eq!(
        s.tuning.connection_id,
        control::ConnectionIds::On { len: 8 }
    );
    let dir = scratch();
    let d = dir.display();
    let base =
        format!("listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\nca = \"{d}/a.pem\"\n");
    let c = validate_connect(connect_toml(&base)).expect("valid");
    assert_eq!(
        c.tuning.connection_id,
        control::ConnectionIds::On { len: 0 }
    );
    let c = validate_connect(connect_toml(&format!("{base}connection_id_length = 20\n")))
        .expect("valid");
    assert_eq!(
        c.tuning.connection_id,
        control::ConnectionIds::On { len: 20 }
    );

    let e = validate_connect(connect_toml(&format!("{base}connection_id_length = 21\n")))
        .expect_err("too long");
    assert!(e.to_string().contains("connection_id_length"), "{e}");
    let e = validate_connect(connect_toml(&format!(
        "{base}connection_id = false\nconnection_id_length = 4\n"
    )))
    .expect_err("conflict");
    assert!(e.to_string().contains("connection_id_length"), "{e}");
}

#[test]
fn defaults_apply_when_keys_are_absent() {
    let s = validate_serve(psk_only_serve()).expect("valid");
    assert_eq!(
        s.tuning,
        Tuning {
            shards: None,
            control_threads: None,
            cpus: None,
            io: IoMode::Auto,
            // dtls_io's constants before these keys existed.
            data_io: DataIo {
                batch: 32,
                uring_buffers: 64,
                gso: true,
                recv_buffer: 8 << 20,
                send_buffer: 8 << 20,
            },
            interface: None,
            mtu: DEFAULT_MTU,
            metrics: None,
            admin_socket: AdminSocket::Default,
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
            drain_timeout: Duration::ZERO,
            keepalive: None,
            log_format: LogFormat::Human,
            limits: Limits::default(),
            takeover: false,
            dual_stack: false,
            run_as: None,
            connection_id: control::ConnectionIds::On {
                len: super::DEFAULT_SERVE_CID_LEN,
            },
            rrc: true,
            versions: super::DEFAULT_VERSIONS.to_vec(),
            tls13_groups: super::TLS13_GROUPS.iter().map(|(_, g)| *g).collect(),
            tls13_cipher_suites: super::TLS13_CIPHER_SUITES.iter().map(|(_, s)| *s).collect(),
        }
    );
    assert!(s.credentials.certificate.is_none());
}

#[test]
fn versions_are_a_preference_list_of_1_3_and_1_2() {
    const CONNECT_BASE: &str = "listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
                                insecure_skip_verify = true\n";
    let c = validate_connect(connect_toml(&format!(
        "{CONNECT_BASE}versions = [\"1.2\", \"1.3\"]\n"
    )))
    .expect("valid");
    assert_eq!(
        c.tuning.versions,
        vec![
            control::ProtocolVersion::Dtls1_2,
            control::ProtocolVersion::Dtls1_3
        ]
    );
    for (value, why) in [
        ("[\"1.4\"]", "`1.3` or `1.2`"),
        ("[\"1.3\", \"1.3\"]", "listed twice"),
        ("[]", "empty"),
    ] {
        let e = validate_connect(connect_toml(&format!("{CONNECT_BASE}versions = {value}\n")))
            .expect_err(value);
        assert!(e.to_string().contains("connect.versions"), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
    // A string where a list belongs is a TOML error naming the key.
    let e = parse_str("[serve]\nversions = \"1.3\"\n").expect_err("not a list");
    assert_eq!(e.key.as_deref(), Some("serve.versions"));
}

#[test]
fn unknown_keys_and_tables_are_named() {
    let e = parse_str("[serve]\nlisten = \"0.0.0.0:1\"\nmtux = 3\n").expect_err("unknown key");
    assert_eq!(e.key.as_deref(), Some("serve.mtux"));
    assert!(e.to_string().contains("unknown field `mtux`"), "{e}");
    assert!(e.to_string().contains("line 3"), "{e}");
    let e = parse_str("[connect]\nserver_nam = \"x\"\n").expect_err("unknown key");
    assert_eq!(e.key.as_deref(), Some("connect.server_nam"));
    let e = parse_str("[serv]\nlisten = \"0.0.0.0:1\"\n").expect_err("unknown table");
    assert_eq!(e.key.as_deref(), Some("serv"));
    let e = parse_str("listen = \"0.0.0.0:1\"\n").expect_err("top-level key");
    assert_eq!(e.key.as_deref(), Some("listen"));
}

#[test]
fn wrong_types_name_the_key_and_line() {
    let e = parse_str("[serve]\nlisten = \"0.0.0.0:1\"\nmtu = \"big\"\n").expect_err("type");
    assert_eq!(e.key.as_deref(), Some("serve.mtu"));
    assert!(e.to_string().contains("line 3"), "{e}");
    let e = parse_str("[serve]\npsk = [\n  \"a:00\",\n  7,\n]\n").expect_err("type");
    assert_eq!(e.key.as_deref(), Some("serve.psk"));
    let e = parse_str("[serve]\nio = \"epoll\"\n").expect_err("variant");
    assert_eq!(e.key.as_deref(), Some("serve.io"));
    assert!(e.to_string().contains("epoll"), "{e}");
}

#[test]
fn a_file_needs_exactly_one_table() {
    let e = parse_str("").expect_err("empty");
    assert!(e.key.is_none());
    assert!(e.to_string().contains("no [serve] or [connect]"), "{e}");
    let e = parse_str("[serve]\n[connect]\n").expect_err("both");
    assert!(e.to_string().contains("both"), "{e}");
}

#[test]
fn numbers_out_of_range_name_key_and_bounds() {
    let mut raw = psk_only_serve();
    raw.mtu = Some(50);
    raw.shards = Some(0);
    raw.control_threads = Some(65);
    raw.idle_timeout = Some(-1);
    let l = lines(validate_serve(raw));
    assert!(
        has(
            &l,
            "serve.mtu:",
            "50 is out of range: must be between 576 and 9000"
        ),
        "{l:?}"
    );
    assert!(has(&l, "serve.shards:", "between 1 and 1024"), "{l:?}");
    assert!(
        has(&l, "serve.control_threads:", "between 1 and 64"),
        "{l:?}"
    );
    assert!(
        has(&l, "serve.idle_timeout:", "-1 is out of range"),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.mtu = Some(9001);
    assert!(has(&lines(validate_serve(raw)), "serve.mtu:", "9001"));
}

#[test]
fn keepalive_must_be_below_idle_timeout() {
    let mut raw = psk_only_serve();
    raw.keepalive = Some(300);
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.keepalive:", "shorter than idle_timeout (300 s)"),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.idle_timeout = Some(30);
    raw.keepalive = Some(29);
    assert!(validate_serve(raw).is_ok());
}

#[test]
fn bad_addresses_name_the_key() {
    let mut raw = psk_only_serve();
    raw.listen = Some("0.0.0.0".into());
    raw.backend = Some("localhost:9000".into());
    raw.metrics = Some("nope".into());
    let l = lines(validate_serve(raw));
    assert!(
        has(
            &l,
            "serve.listen:",
            "`0.0.0.0` is not a usable socket address"
        ),
        "{l:?}"
    );
    assert!(
        has(&l, "serve.backend:", "host names are not resolved"),
        "{l:?}"
    );
    assert!(has(&l, "serve.metrics:", "`nope`"), "{l:?}");
    let mut raw = psk_only_serve();
    raw.backend = Some("127.0.0.1:0".into());
    assert!(has(&lines(validate_serve(raw)), "serve.backend:", "port 0"));
    let mut raw = psk_only_serve();
    raw.backend = Some("0.0.0.0:9000".into());
    assert!(has(
        &lines(validate_serve(raw)),
        "serve.backend:",
        "unspecified"
    ));
    let mut raw = psk_only_serve();
    raw.listen = None;
    assert!(has(
        &lines(validate_serve(raw)),
        "serve.listen:",
        "--listen"
    ));
}

#[test]
fn psk_parsing() {
    let spec = |s: &str| PskSpec(zeroize::Zeroizing::new(s.to_owned()));
    let p = parse_psk(&spec("host:a:0aFF")).expect("identity may contain ':'");
    assert_eq!(
        (p.identity.as_str(), p.key()),
        ("host:a", &[0x0a, 0xff][..])
    );
    let err = |s: &str| parse_psk(&spec(s)).expect_err("invalid");
    assert!(err("nocolon").contains("not ID:HEX"));
    assert!(err(":00").contains("identity is empty"));
    assert!(err("id:abc").contains("odd number of hex digits"));
    assert!(err("id:zz").contains("non-hex character at position 1"));
    assert!(err("id:").contains("key is 0 bytes"));
    assert!(err(&format!("id:{}", "00".repeat(513))).contains("must be 1 to 512"));
    // Key material never appears in a message, nor in Debug output.
    let secret = "id:deadbeefcafe1";
    assert!(!err(secret).contains("deadbeef"));
    assert!(!format!("{:?}", spec(secret)).contains("deadbeef"));
    let debug = format!("{:?}", parse_psk(&spec("id:deadbeef")).expect("ok"));
    assert!(
        debug.contains("\"id\"") && !debug.contains("222"),
        "{debug}"
    );
}

#[test]
fn psk_problems_name_the_entry() {
    let mut raw = psk_only_serve();
    raw.psk = Some(vec![
        "a:00".parse().expect("infallible"),
        "a:11".parse().expect("infallible"),
    ]);
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.psk[1]:", "identity `a` is given twice"),
        "{l:?}"
    );
}

#[test]
fn serve_credentials_rules() {
    let dir = scratch();
    let mut raw = psk_only_serve();
    raw.psk = None;
    let l = lines(validate_serve(raw.clone()));
    assert!(has(&l, "serve.cert:", "no credentials"), "{l:?}");
    raw.cert = Some(dir.join("a.pem"));
    let l = lines(validate_serve(raw.clone()));
    assert!(has(&l, "serve.cert:", "requires `key`"), "{l:?}");
    raw.cert = None;
    raw.key = Some(dir.join("b.pem"));
    assert!(has(
        &lines(validate_serve(raw.clone())),
        "serve.key:",
        "requires `cert`"
    ));
    raw.cert = Some(dir.join("a.pem"));
    assert!(validate_serve(raw.clone()).is_ok());
    let mut psk_only = psk_only_serve();
    psk_only.client_ca = Some(dir.join("a.pem"));
    let l = lines(validate_serve(psk_only));
    assert!(has(&l, "serve.client_ca:", "requires `cert`"), "{l:?}");
}

#[test]
fn missing_and_unreadable_files_name_key_and_path() {
    let dir = scratch();
    let mut raw = psk_only_serve();
    raw.cert = Some(dir.join("missing.pem"));
    raw.key = Some(dir.clone());
    let l = lines(validate_serve(raw));
    let missing = dir.join("missing.pem").display().to_string();
    assert!(
        has(
            &l,
            "serve.cert:",
            &format!("cannot read {missing}: No such file")
        ),
        "{l:?}"
    );
    assert!(has(&l, "serve.key:", "not a regular file"), "{l:?}");
}

#[test]
fn connect_trust_rules() {
    let dir = scratch();
    let base = || connect_toml("listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n");
    let l = lines(validate_connect(base()));
    assert!(has(&l, "connect.ca:", "no credentials"), "{l:?}");

    let mut raw = base();
    raw.ca = Some(dir.join("a.pem"));
    let c = validate_connect(raw.clone()).expect("valid");
    assert!(matches!(
        c.trust,
        ServerTrust::Ca { ref server_name, .. } if server_name == "127.0.0.1"
    ));
    raw.insecure_skip_verify = Some(true);
    raw.psk = Some("id:00".parse().expect("infallible"));
    let l = lines(validate_connect(raw));
    assert!(
        has(&l, "connect.insecure_skip_verify:", "combined with `ca`"),
        "{l:?}"
    );
    assert!(has(&l, "connect.psk:", "combined with `ca`"), "{l:?}");
    assert!(
        has(&l, "connect.psk:", "combined with `insecure_skip_verify`"),
        "{l:?}"
    );

    let mut raw = base();
    raw.psk = Some("id:00".parse().expect("infallible"));
    raw.cert = Some(dir.join("a.pem"));
    raw.key = Some(dir.join("b.pem"));
    raw.server_name = Some("example.com".into());
    let l = lines(validate_connect(raw));
    assert!(has(&l, "connect.cert:", "combined with `psk`"), "{l:?}");
    assert!(has(&l, "connect.server_name:", "requires `ca`"), "{l:?}");

    let mut raw = base();
    raw.ca = Some(dir.join("a.pem"));
    raw.server_name = Some("bad name!".into());
    assert!(has(
        &lines(validate_connect(raw)),
        "connect.server_name:",
        "`bad name!`"
    ));

    let mut raw = base();
    raw.insecure_skip_verify = Some(true);
    let c = validate_connect(raw).expect("valid");
    assert!(matches!(c.trust, ServerTrust::InsecureSkipVerify));
}

#[test]
fn flags_override_file_values() {
    let file = serve_toml(
        "listen = \"0.0.0.0:1\"\nbackend = \"127.0.0.1:2\"\npsk = [\"a:00\", \"b:11\"]\n\
         mtu = 1300\nio = \"mmsg\"\nkeepalive = 5\n",
    );
    // No flags: the file's values stay.
    assert_eq!(merge_serve(file.clone(), ServeFlags::default()), file);
    let flags = ServeFlags {
        listen: vec!["127.0.0.1:7".into()],
        psk: vec!["c:22".parse().expect("infallible")],
        tuning: TuningFlags {
            mtu: Some(1500),
            log_format: Some(LogFormat::Json),
            ..TuningFlags::default()
        },
        ..ServeFlags::default()
    };
    let merged = merge_serve(file, flags);
    assert_eq!(merged.listen, Some("127.0.0.1:7".into()));
    assert_eq!(merged.backend.as_deref(), Some("127.0.0.1:2"));
    assert_eq!(merged.psk, Some(vec!["c:22".parse().expect("infallible")]));
    assert_eq!(merged.mtu, Some(1500));
    assert_eq!(merged.io, Some(IoMode::Mmsg));
    assert_eq!(merged.keepalive, Some(5));
    assert_eq!(merged.log_format, Some(LogFormat::Json));
}

#[test]
fn insecure_flag_only_turns_verification_off() {
    let file = connect_toml("insecure_skip_verify = true\nserver = \"127.0.0.1:1\"\n");
    let kept = merge_connect(file.clone(), ConnectFlags::default());
    assert_eq!(kept.insecure_skip_verify, Some(true));
    let flags = ConnectFlags {
        insecure_skip_verify: true,
        server: Some("127.0.0.1:2".into()),
        ..ConnectFlags::default()
    };
    let merged = merge_connect(RawConnect::default(), flags);
    assert_eq!(merged.insecure_skip_verify, Some(true));
    assert_eq!(merged.server.as_deref(), Some("127.0.0.1:2"));
}

#[test]
fn takeover_flag_only_turns_takeover_on() {
    let on = serve_toml("takeover = true\n");
    assert_eq!(merge_serve(on, ServeFlags::default()).takeover, Some(true));
    let off = connect_toml("takeover = false\n");
    let flags = ConnectFlags {
        tuning: TuningFlags {
            takeover: true,
            ..TuningFlags::default()
        },
        ..ConnectFlags::default()
    };
    assert_eq!(merge_connect(off.clone(), flags).takeover, Some(true));
    assert_eq!(
        merge_connect(off, ConnectFlags::default()).takeover,
        Some(false)
    );
    let mut s = psk_only_serve();
    s.takeover = Some(true);
    assert!(validate_serve(s).expect("valid").tuning.takeover);
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("dtlsd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn resolve_loads_the_file_resolves_paths_and_applies_flags() {
    let dir = scratch();
    let path = write_config(
        &dir,
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         cert = \"a.pem\"\nkey = \"b.pem\"\nmtu = 1300\n",
    );
    let flags = ServeFlags {
        config: Some(path.clone()),
        backend: Some("127.0.0.1:9999".into()),
        ..ServeFlags::default()
    };
    let s = flags.resolve().expect("valid");
    assert_eq!(s.backend, "127.0.0.1:9999".parse().expect("addr"));
    assert_eq!(s.tuning.mtu, 1300);
    assert_eq!(
        s.credentials.certificate,
        Some(CertKeyPaths {
            cert: dir.join("a.pem"),
            key: dir.join("b.pem"),
        })
    );
    // The flag fixes what the file gets wrong.
    let bad = write_config(
        &dir,
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"nope\"\npsk = [\"a:00\"]\n",
    );
    let fixed = ServeFlags {
        config: Some(bad.clone()),
        backend: Some("127.0.0.1:1".into()),
        ..ServeFlags::default()
    };
    assert!(fixed.resolve().is_ok());
    let wrong = ConnectFlags {
        config: Some(bad),
        ..ConnectFlags::default()
    };
    let l = lines(wrong.resolve());
    assert!(has(&l, "--config:", "`connect` needs [connect]"), "{l:?}");
    let missing = ServeFlags {
        config: Some(dir.join("absent.toml")),
        ..ServeFlags::default()
    };
    assert!(has(
        &lines(missing.resolve()),
        "cannot read config file",
        "absent.toml"
    ));
}

/// The flag structs as the `serve`/`connect` subcommands will use them, beside the global
/// `--log-format` of `dtlsd`.
#[derive(Debug, clap::Parser)]
struct FlagsCli {
    #[arg(long, value_enum, global = true)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: FlagsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FlagsCommand {
    Serve(ServeFlags),
    Connect(ConnectFlags),
}

#[test]
fn flags_parse_as_documented() {
    use clap::{CommandFactory, Parser};
    FlagsCli::command().debug_assert();
    let cli = FlagsCli::try_parse_from([
        "dtlsd",
        "serve",
        "--listen",
        "0.0.0.0:4433",
        "--backend",
        "127.0.0.1:9000",
        "--psk",
        "a:00",
        "--psk",
        "b:11",
        "--mtu",
        "1300",
        "--io",
        "mmsg",
        "--shards",
        "2",
        "--idle-timeout",
        "60",
        "--keepalive",
        "5",
        "--metrics",
        "127.0.0.1:9100",
        "--client-ca",
        "ca.pem",
        "--cert",
        "s.pem",
        "--key",
        "s.key",
        "--config",
        "f.toml",
        "--log-format",
        "json",
    ])
    .expect("serve flags parse");
    let FlagsCommand::Serve(s) = cli.command else {
        panic!("expected serve");
    };
    assert_eq!(s.psk.len(), 2);
    assert_eq!(s.tuning.io, Some(IoMode::Mmsg));
    assert_eq!(s.tuning.keepalive, Some(5));
    assert_eq!(s.config, Some(PathBuf::from("f.toml")));
    assert_eq!(cli.log_format, Some(LogFormat::Json));
    let cli = FlagsCli::try_parse_from([
        "dtlsd",
        "connect",
        "--listen",
        "127.0.0.1:5000",
        "--server",
        "127.0.0.1:4433",
        "--insecure-skip-verify",
        "--server-name",
        "localhost",
        "--ca",
        "ca.pem",
        "--psk",
        "a:00",
    ])
    .expect("connect flags parse");
    let FlagsCommand::Connect(c) = cli.command else {
        panic!("expected connect");
    };
    assert!(c.insecure_skip_verify);
    assert_eq!(c.server_name.as_deref(), Some("localhost"));
    assert!(FlagsCli::try_parse_from(["dtlsd", "serve", "--io", "epoll"]).is_err());
}

#[test]
fn admin_socket_is_off_a_default_or_an_absolute_path() {
    let tuning = |value: Option<&str>| {
        let mut raw = psk_only_serve();
        raw.admin_socket = value.map(str::to_owned);
        validate_serve(raw).map(|c| c.tuning.admin_socket)
    };
    assert_eq!(tuning(None).ok(), Some(AdminSocket::Default));
    assert_eq!(tuning(Some("off")).ok(), Some(AdminSocket::Off));
    assert_eq!(
        tuning(Some("/run/x/admin.sock")).ok(),
        Some(AdminSocket::At("/run/x/admin.sock".into()))
    );
    let mut raw = psk_only_serve();
    raw.admin_socket = Some("admin.sock".into());
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.admin_socket:", "must be an absolute path"),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.admin_socket = Some(format!("/{}", "a".repeat(200)));
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.admin_socket:", "longer than 107 bytes"),
        "{l:?}"
    );
}

#[test]
fn proxy_protocol_key_and_flag() {
    use dtls_runtime::ProxyProtocol;
    assert_eq!(
        validate_serve(psk_only_serve())
            .expect("valid")
            .proxy_protocol,
        None
    );
    for (value, want) in [
        ("off", None),
        ("v2-first", Some(ProxyProtocol::V2First)),
        ("v2-every", Some(ProxyProtocol::V2Every)),
        ("spp", Some(ProxyProtocol::Spp)),
    ] {
        let mut raw = psk_only_serve();
        raw.proxy_protocol = serve_toml(&format!("proxy_protocol = \"{value}\"\n")).proxy_protocol;
        assert_eq!(
            validate_serve(raw).expect("valid").proxy_protocol,
            want,
            "{value}"
        );
    }
    // A bad value and the key in [connect] are errors naming the key.
    let e = parse_str("[serve]\nproxy_protocol = \"v1\"\n").expect_err("variant");
    assert_eq!(e.key.as_deref(), Some("serve.proxy_protocol"));
    assert!(e.to_string().contains("v1"), "{e}");
    let e = parse_str("[connect]\nproxy_protocol = \"spp\"\n").expect_err("serve only");
    assert_eq!(e.key.as_deref(), Some("connect.proxy_protocol"));
    // The flag overrides the file; a change needs a restart.
    let file = serve_toml("proxy_protocol = \"spp\"\n");
    let flags = ServeFlags {
        proxy_protocol: Some(ProxyProtocolMode::V2Every),
        ..ServeFlags::default()
    };
    assert_eq!(
        merge_serve(file.clone(), flags).proxy_protocol,
        Some(ProxyProtocolMode::V2Every)
    );
    assert_eq!(
        merge_serve(file, ServeFlags::default()).proxy_protocol,
        Some(ProxyProtocolMode::Spp)
    );
    let before = validate_serve(psk_only_serve()).expect("valid");
    let mut raw = psk_only_serve();
    raw.proxy_protocol = Some(ProxyProtocolMode::V2First);
    let after = validate_serve(raw).expect("valid");
    assert_eq!(before.restart_required(&after), ["proxy_protocol"]);
    use clap::Parser;
    let cli = FlagsCli::try_parse_from(["dtlsd", "serve", "--proxy-protocol", "v2-first"])
        .expect("flag parses");
    let FlagsCommand::Serve(s) = cli.command else {
        panic!("expected serve");
    };
    assert_eq!(s.proxy_protocol, Some(ProxyProtocolMode::V2First));
    assert!(FlagsCli::try_parse_from(["dtlsd", "serve", "--proxy-protocol", "v1"]).is_err());
    assert!(FlagsCli::try_parse_from(["dtlsd", "connect", "--proxy-protocol", "spp"]).is_err());
}

#[test]
fn drain_timeout_is_zero_to_an_hour_and_a_flag() {
    let drain = |v: i64| {
        let mut raw = psk_only_serve();
        raw.drain_timeout = Some(v);
        validate_serve(raw).map(|c| c.tuning.drain_timeout)
    };
    assert_eq!(drain(0).ok(), Some(Duration::ZERO));
    assert_eq!(drain(3600).ok(), Some(Duration::from_secs(3600)));
    for bad in [-1, 3601] {
        let l = lines(drain(bad));
        assert!(has(&l, "serve.drain_timeout:", "out of range"), "{l:?}");
    }
    let flags = ServeFlags {
        tuning: TuningFlags {
            drain_timeout: Some(7),
            ..TuningFlags::default()
        },
        ..ServeFlags::default()
    };
    let merged = merge_serve(serve_toml("drain_timeout = 3\n"), flags);
    assert_eq!(merged.drain_timeout, Some(7));
}

#[test]
fn cpu_lists_follow_the_kernel_format_and_the_affinity_mask() {
    use super::validate::parse_cpu_list;
    let allowed = [0, 1, 2, 3, 6];
    assert_eq!(parse_cpu_list("2-3", &allowed), Ok(vec![2, 3]));
    assert_eq!(parse_cpu_list("3,0-1, 6", &allowed), Ok(vec![3, 0, 1, 6]));
    for (bad, why) in [
        ("3-2", "backwards"),
        ("x", "`x` is not a CPU number"),
        ("", "is not a CPU number"),
        ("1,1", "listed twice"),
        ("4", "CPU 4 is not one this process may run on (0-3,6)"),
        ("0-9999", "beyond 4096"),
    ] {
        let e = parse_cpu_list(bad, &allowed).expect_err(bad);
        assert!(e.contains(why), "{bad}: {e}");
    }
    // Through the configuration: the key is named.
    let mut raw = psk_only_serve();
    raw.cpus = Some("100000".into());
    let l = lines(validate_serve(raw));
    assert!(has(&l, "serve.cpus:", "is not a CPU list"), "{l:?}");
}

#[test]
fn dual_stack_needs_the_ipv6_wildcard() {
    let mut raw = psk_only_serve();
    raw.listen = Some("[::]:4433".into());
    raw.dual_stack = Some(true);
    assert!(validate_serve(raw).expect("valid").tuning.dual_stack);
    for listen in ["0.0.0.0:4433", "[::1]:4433"] {
        let mut raw = psk_only_serve();
        raw.listen = Some(listen.into());
        raw.dual_stack = Some(true);
        let l = lines(validate_serve(raw));
        assert!(
            has(&l, "serve.dual_stack:", "requires `listen = \"[::]:PORT\"`"),
            "{listen}: {l:?}"
        );
    }
}

#[test]
fn cid_steering_key_and_flag() {
    assert!(
        validate_serve(psk_only_serve())
            .expect("valid")
            .cid_steering,
        "on by default"
    );
    let file = serve_toml("cid_steering = false\n");
    assert_eq!(file.cid_steering, Some(false));
    let mut raw = psk_only_serve();
    raw.cid_steering = file.cid_steering;
    let off = validate_serve(raw).expect("valid");
    assert!(!off.cid_steering);
    let before = validate_serve(psk_only_serve()).expect("valid");
    assert_eq!(before.restart_required(&off), ["cid_steering"]);
    // The flag can only turn it off.
    let on = serve_toml("cid_steering = true\n");
    let flags = ServeFlags {
        no_cid_steering: true,
        ..ServeFlags::default()
    };
    assert_eq!(merge_serve(on.clone(), flags).cid_steering, Some(false));
    assert_eq!(
        merge_serve(on, ServeFlags::default()).cid_steering,
        Some(true)
    );
    // Serve only: in [connect] it is an unknown key.
    let e = parse_str("[connect]\ncid_steering = false\n").expect_err("serve only");
    assert_eq!(e.key.as_deref(), Some("connect.cid_steering"));
}
#[path = "access_tests.rs"]
mod access;

#[test]
fn upstream_source_key_and_flags() {
    use clap::Parser;
    use dtls_shard::UpstreamSource;
    assert_eq!(
        validate_serve(psk_only_serve())
            .expect("valid")
            .upstream_source,
        UpstreamSource::Ephemeral
    );
    for (value, want) in [
        ("daemon", UpstreamSource::Ephemeral),
        ("transparent", UpstreamSource::Transparent),
    ] {
        let mut raw = psk_only_serve();
        raw.upstream_source =
            serve_toml(&format!("upstream_source = \"{value}\"\n")).upstream_source;
        assert_eq!(
            validate_serve(raw).expect("valid").upstream_source,
            want,
            "{value}"
        );
    }
    // A bad value and the key in [connect] are errors naming the key.
    let e = parse_str("[serve]\nupstream_source = \"spoof\"\n").expect_err("variant");
    assert_eq!(e.key.as_deref(), Some("serve.upstream_source"));
    let e = parse_str("[connect]\nupstream_source = \"transparent\"\n").expect_err("serve only");
    assert_eq!(e.key.as_deref(), Some("connect.upstream_source"));

    // --transparent and --upstream-source override the file; they exclude each other.
    let file = serve_toml("upstream_source = \"daemon\"\n");
    let parse = |args: &[&str]| {
        let cli =
            FlagsCli::try_parse_from(["dtlsd", "serve"].iter().chain(args)).expect("flags parse");
        let FlagsCommand::Serve(s) = cli.command else {
            panic!("expected serve");
        };
        s
    };
    for args in [
        &["--transparent"][..],
        &["--upstream-source", "transparent"],
    ] {
        assert_eq!(
            merge_serve(file.clone(), parse(args)).upstream_source,
            Some(UpstreamSourceMode::Transparent),
            "{args:?}"
        );
    }
    assert_eq!(
        merge_serve(file.clone(), parse(&[])).upstream_source,
        Some(UpstreamSourceMode::Daemon)
    );
    assert!(
        FlagsCli::try_parse_from([
            "dtlsd",
            "serve",
            "--transparent",
            "--upstream-source",
            "daemon"
        ])
        .is_err()
    );
    assert!(FlagsCli::try_parse_from(["dtlsd", "connect", "--transparent"]).is_err());
    assert!(FlagsCli::try_parse_from(["dtlsd", "serve", "--upstream-source", "x"]).is_err());

    // A change needs a restart.
    let before = validate_serve(psk_only_serve()).expect("valid");
    let mut raw = psk_only_serve();
    raw.upstream_source = Some(UpstreamSourceMode::Transparent);
    let after = validate_serve(raw).expect("valid");
    assert_eq!(before.restart_required(&after), ["upstream_source"]);
}

#[test]
fn transparent_excludes_a_proxy_header_and_mixed_families() {
    // Every header mode but `off` conflicts, named under upstream_source.
    for mode in [
        ProxyProtocolMode::V2First,
        ProxyProtocolMode::V2Every,
        ProxyProtocolMode::Spp,
    ] {
        let mut raw = psk_only_serve();
        raw.upstream_source = Some(UpstreamSourceMode::Transparent);
        raw.proxy_protocol = Some(mode);
        let l = lines(validate_serve(raw));
        assert_eq!(
            l,
            ["serve.upstream_source: cannot be combined with `proxy_protocol`"],
            "{mode:?}"
        );
    }
    let mut raw = psk_only_serve();
    raw.upstream_source = Some(UpstreamSourceMode::Transparent);
    raw.proxy_protocol = Some(ProxyProtocolMode::Off);
    assert!(validate_serve(raw).is_ok(), "off is no header");
    // The daemon's own address takes a header as before.
    let mut raw = psk_only_serve();
    raw.upstream_source = Some(UpstreamSourceMode::Daemon);
    raw.proxy_protocol = Some(ProxyProtocolMode::Spp);
    assert!(validate_serve(raw).is_ok());

    // The socket binding a client's address connects to the backend: one family.
    let mut raw = psk_only_serve();
    raw.upstream_source = Some(UpstreamSourceMode::Transparent);
    raw.backend = Some("[::1]:9000".into());
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "serve.upstream_source: ", "in one address family"),
        "{l:?}"
    );
    let mut raw = psk_only_serve();
    raw.upstream_source = Some(UpstreamSourceMode::Transparent);
    raw.listen = Some("[::]:4433".into());
    raw.backend = Some("[::1]:9000".into());
    assert!(validate_serve(raw).is_ok(), "both IPv6");
    // Mixed families are fine without transparent mode.
    let mut raw = psk_only_serve();
    raw.backend = Some("[::1]:9000".into());
    assert!(validate_serve(raw).is_ok());
}

#[test]
fn tls13_groups_and_suites_are_named_lists() {
    let base = "listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
                insecure_skip_verify = true\n";
    for (key, value, why) in [
        (
            "tls13_groups",
            "[\"X448\"]",
            "`X448` is not one of X25519MLKEM768",
        ),
        ("tls13_groups", "[\"X25519\", \"x25519\"]", "listed twice"),
        ("tls13_cipher_suites", "[]", "empty"),
        (
            "tls13_cipher_suites",
            "[\"TLS_AES_128_CCM_SHA256\"]",
            "not one of",
        ),
    ] {
        let e =
            validate_connect(connect_toml(&format!("{base}{key} = {value}\n"))).expect_err(value);
        assert!(e.to_string().contains(&format!("connect.{key}")), "{e}");
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn listen_takes_one_address_or_a_list_each_entry_named_when_wrong() {
    let one =
        serve_toml("listen = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9\"\npsk = [\"a:00\"]\n");
    let s = validate_serve(one).expect("one address");
    assert_eq!(s.listen, vec!["127.0.0.1:4433".parse().expect("addr")]);
    let many = serve_toml(
        "listen = [\"127.0.0.1:4433\", \"[::1]:4433\"]\nbackend = \"127.0.0.1:9\"\npsk = [\"a:00\"]\n",
    );
    let s = validate_serve(many).expect("two addresses");
    assert_eq!(
        s.listen,
        vec![
            "127.0.0.1:4433".parse().expect("addr"),
            "[::1]:4433".parse().expect("addr")
        ]
    );
    let bad = serve_toml(
        "listen = [\"127.0.0.1:4433\", \"nope\", \"127.0.0.1:4433\"]\nbackend = \"127.0.0.1:9\"\n\
         psk = [\"a:00\"]\n",
    );
    let l = lines(validate_serve(bad));
    assert!(
        has(
            &l,
            "serve.listen[1]:",
            "`nope` is not a usable socket address"
        ),
        "{l:?}"
    );
    assert!(has(&l, "serve.listen[2]:", "given twice"), "{l:?}");
    let empty = serve_toml("listen = []\nbackend = \"127.0.0.1:9\"\npsk = [\"a:00\"]\n");
    let l = lines(validate_serve(empty));
    assert!(has(&l, "serve.listen:", "at least one address"), "{l:?}");
    let e = parse_str("[serve]\nlisten = 7\n").expect_err("type");
    assert_eq!(e.key.as_deref(), Some("serve.listen"));
    // Repeated flags replace the file's address with the list.
    let flags = ServeFlags {
        listen: vec!["127.0.0.1:1".into(), "127.0.0.2:2".into()],
        ..ServeFlags::default()
    };
    let merged = merge_serve(psk_only_serve(), flags);
    assert_eq!(
        merged.listen,
        Some(ListenSpec::Many(vec![
            "127.0.0.1:1".into(),
            "127.0.0.2:2".into()
        ]))
    );
}

#[test]
fn interface_goes_with_io_xdp_or_auto_in_serve_only() {
    let body = "listen = \"10.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\npsk = [\"a:0011\"]\n";
    let c = validate_serve(serve_toml(&format!(
        "{body}io = \"xdp\"\ninterface = \"veth0\"\n"
    )))
    .expect("valid xdp serve config");
    assert_eq!(c.tuning.io, IoMode::Xdp);
    assert_eq!(c.tuning.interface.as_deref(), Some("veth0"));
    let c = validate_serve(serve_toml(body)).expect("valid");
    assert_eq!(c.tuning.interface, None);

    // With io = "auto" (also the default) an interface means: try AF_XDP first.
    for io in ["", "io = \"auto\"\n"] {
        let c = validate_serve(serve_toml(&format!("{body}{io}interface = \"veth0\"\n")))
            .expect("valid auto serve config with an interface");
        assert_eq!(c.tuning.io, IoMode::Auto);
        assert_eq!(c.tuning.interface.as_deref(), Some("veth0"));
    }
    for io in ["uring", "mmsg"] {
        let l = lines(validate_serve(serve_toml(&format!(
            "{body}io = \"{io}\"\ninterface = \"veth0\"\n"
        ))));
        assert!(
            has(&l, "serve.interface:", "io = \"xdp\" or \"auto\""),
            "{io}: {l:?}"
        );
    }
    let l = lines(validate_serve(serve_toml(&format!("{body}io = \"xdp\"\n"))));
    assert!(has(&l, "serve.interface:", "needs the interface"), "{l:?}");
    for bad in ["", "a/b", "has space", "sixteen-bytes-xx"] {
        let l = lines(validate_serve(serve_toml(&format!(
            "{body}io = \"xdp\"\ninterface = \"{bad}\"\n"
        ))));
        assert!(
            has(&l, "serve.interface:", "is not an interface name"),
            "{bad:?}: {l:?}"
        );
    }
    let l = lines(validate_serve(serve_toml(
        "listen = [\"10.0.0.1:4433\", \"10.0.0.2:4433\"]\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"a:0011\"]\nio = \"xdp\"\ninterface = \"veth0\"\n",
    )));
    assert!(has(&l, "serve.listen:", "one listen address"), "{l:?}");
    let l = lines(validate_serve(serve_toml(
        "listen = [\"10.0.0.1:4433\", \"10.0.0.2:4433\"]\nbackend = \"127.0.0.1:9000\"\n\
         psk = [\"a:0011\"]\ninterface = \"veth0\"\n",
    )));
    assert!(has(&l, "serve.listen:", "one listen address"), "{l:?}");

    let l = lines(validate_connect(connect_toml(
        "listen = \"127.0.0.1:5000\"\nserver = \"127.0.0.1:4433\"\n\
         insecure_skip_verify = true\nio = \"xdp\"\n",
    )));
    assert!(has(&l, "connect.io:", "only for serve"), "{l:?}");
    // `interface` is no [connect] key at all.
    assert!(parse_str("[connect]\ninterface = \"veth0\"\n").is_err());
}

#[path = "data_io_tests.rs"]
mod data_io;
