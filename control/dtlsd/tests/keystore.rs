//! The key store (`key_store`): two `dtlsd serve` nodes reading one store accept each
//! other's session tickets, and a rotation (new secret, old one kept as previous, SIGHUP)
//! drops none; once the old secret leaves the store its tickets stop resuming (the client
//! falls back to a full handshake).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Client, Daemon, EchoBackend, TempDir, certs, wait_until};
use control::{Config, ProtocolVersion};

const S1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const S2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const S3: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const C1: &str = "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
const RESUMED_12: &str = r#"dtlsd_handshakes_resumed_total{version="1.2"}"#;

fn write_store(path: &str, tickets: &[&str]) {
    let list = |l: &[&str]| {
        l.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        path,
        format!(
            "ticket_secrets = [{}]\ncookie_secrets = [{}]\n",
            list(tickets),
            list(&[C1])
        ),
    )
    .expect("write key store");
}

fn reload(d: &Daemon, count: usize) {
    d.signal("HUP");
    wait_until(
        "reload",
        || d.log(),
        || d.log().matches("configuration reloaded").count() >= count,
    );
}

#[test]
fn nodes_sharing_a_key_store_resume_each_others_tickets_through_a_rotation() {
    let pki = TempDir::new("keystore");
    certs(&pki);
    let store = pki.file("keys.toml");
    write_store(&store, &[S1]);
    let backend = EchoBackend::start();
    let args = ["--shards", "1", "--key-store", &store, "--versions", "1.2"];
    let a = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let b = Daemon::start_serve_with_metrics(backend.addr, &pki, &args);
    let config = Arc::new(Config {
        versions: vec![ProtocolVersion::Dtls1_2],
        ..(*Client::config(&pki)).clone()
    });
    let connect = |d: &Daemon, ticket| {
        let mut c = Client::try_connect(
            Arc::clone(&config),
            d.listen,
            ticket,
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("handshake: {e}\n{}", d.log()));
        c.echo(b"through the key store");
        c
    };
    // Three tickets from node A, under S1 (a ticket is spent once here).
    let mut tickets = (0..3)
        .map(|_| {
            connect(&a, None)
                .ticket
                .take()
                .expect("node A issues a ticket")
        })
        .collect::<Vec<_>>()
        .into_iter();
    let mut next = || tickets.next().expect("enough tickets");

    // Node B opens node A's ticket: an abbreviated handshake.
    let mut on_b = connect(&b, Some(next()));
    assert_eq!(b.metric(RESUMED_12), Some(1), "{}", b.log());
    let b_ticket = on_b.ticket.take().expect("node B issues a ticket");

    // Rotation: S2 current, S1 previous, on B. A's S1 ticket still resumes there.
    write_store(&store, &[S2, S1]);
    reload(&b, 1);
    connect(&b, Some(next()));
    assert_eq!(b.metric(RESUMED_12), Some(2), "{}", b.log());
    // And B's new tickets (S2) resume on A once A has the rotated store too.
    let mut fresh = connect(&b, None);
    let s2_ticket = fresh.ticket.take().expect("ticket under S2");
    reload(&a, 1);
    connect(&a, Some(s2_ticket));
    assert_eq!(a.metric(RESUMED_12), Some(1), "{}", a.log());

    // S1 leaves the store: its tickets no longer resume, the handshake is a full one.
    write_store(&store, &[S3, S2]);
    reload(&b, 2);
    connect(&b, Some(next()));
    connect(&b, Some(b_ticket));
    assert_eq!(b.metric(RESUMED_12), Some(2), "{}", b.log());

    // A store that does not parse keeps the running secrets (the reload fails, counted).
    std::fs::write(&store, "ticket_secrets = 7\n").expect("write");
    b.signal("HUP");
    wait_until(
        "failed reload",
        || b.log(),
        || b.metric("dtlsd_reloads_failed_total") == Some(1),
    );
    let log = b.log();
    assert!(log.contains("key_store"), "{log}");
    assert!(!log.contains(S3), "a secret in the log: {log}");
}

/// `dtlsd check-config` and the start-up checks load the store: a bad one is named.
#[test]
fn check_config_names_a_bad_key_store() {
    let pki = TempDir::new("keystore-check");
    certs(&pki);
    let store = pki.file("keys.toml");
    std::fs::write(&store, format!("ticket_secrets = [\"{S1}\"]\n")).expect("write");
    let config = pki.file("serve.toml");
    std::fs::write(
        &config,
        "[serve]\nlisten = \"127.0.0.1:4433\"\nbackend = \"127.0.0.1:9000\"\n\
         cert = \"server.pem\"\nkey = \"server.key\"\nkey_store = \"keys.toml\"\n",
    )
    .expect("write");
    let errors = dtlsd::check::check_file(std::path::Path::new(&config))
        .expect_err("cookie_secrets missing")
        .0
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("serve.key_store: key_store ")
            && errors[0].ends_with("cookie_secrets: missing"),
        "{errors:?}"
    );
    write_store(&store, &[S1]);
    dtlsd::check::check_file(std::path::Path::new(&config)).expect("valid store");
}
