//! Unit tests of the abuse-control and access keys (issue 14): `[limits]`'s per-source rules
//! and allow/deny lists, and `[serve]`'s client identity rules, from file and flags.

use super::*;

fn serve_with_limits(serve: &str, limits: &str) -> RawServe {
    let text = format!(
        "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n{serve}\n\
         [limits]\n{limits}\n"
    );
    match parse_str(&text).expect("parses") {
        RawConfig::Serve(s) => s,
        RawConfig::Connect(_) => panic!("expected a serve table"),
    }
}

#[test]
fn limits_access_keys_parse_from_the_file() {
    let raw = serve_with_limits(
        "psk = [\"a:00ff\"]",
        "handshakes_per_second = 20\nhandshake_burst = 40\nsessions_per_address = 8\n\
         allow = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny = [\"10.66.0.0/16\", \"192.0.2.9\"]",
    );
    let s = validate_serve(raw).expect("valid");
    let l = &s.tuning.limits;
    assert_eq!(
        (
            l.handshakes_per_second,
            l.handshake_burst,
            l.sessions_per_address
        ),
        (20, 40, 8)
    );
    let text = |nets: &[ipnet::IpNet]| nets.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(text(&l.access.allow), ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(text(&l.access.deny), ["10.66.0.0/16", "192.0.2.9/32"]);
}

#[test]
fn bad_access_entries_name_their_index() {
    let raw = serve_with_limits(
        "psk = [\"a:00ff\"]",
        "allow = [\"10.0.0.0/8\", \"2001:db8::/32\", \"10.0.0.0/33\"]\ndeny = [\"example.net\"]",
    );
    let l = lines(validate_serve(raw));
    assert!(
        has(&l, "limits.allow[2]:", "`10.0.0.0/33` is not usable"),
        "{l:?}"
    );
    assert!(
        has(&l, "limits.deny[0]:", "`example.net` is not usable"),
        "{l:?}"
    );
    // A list of the wrong type is a TOML error naming the key.
    let err = parse_str("[serve]\n[limits]\nallow = \"10.0.0.0/8\"\n").expect_err("a string");
    assert!(err.to_string().contains("limits.allow"), "{err}");
}

#[test]
fn identity_rules_parse_merge_and_need_client_ca() {
    let dir = scratch();
    let d = dir.display();
    let body = format!(
        "cert = \"{d}/a.pem\"\nkey = \"{d}/b.pem\"\nclient_ca = \"{d}/a.pem\"\n\
         allow_cn = [\"alice\"]\nallow_dns = [\"bob.example.net\"]\n\
         allow_uri = [\"spiffe://example.net/carol\"]"
    );
    let file = serve_with_limits(&body, "");
    let s = validate_serve(file.clone()).expect("valid");
    let rules = &s.credentials.identity_rules;
    assert_eq!(rules.cn, ["alice"]);
    assert_eq!(rules.dns, ["bob.example.net"]);
    assert_eq!(rules.uri, ["spiffe://example.net/carol"]);
    // Flags replace a list when given, and leave the others.
    let flags = ServeFlags {
        allow_cn: vec!["dave".into(), "erin".into()],
        ..ServeFlags::default()
    };
    let merged = merge_serve(file.clone(), flags);
    assert_eq!(merged.allow_cn, Some(vec!["dave".into(), "erin".into()]));
    assert_eq!(merged.allow_dns, Some(vec!["bob.example.net".into()]));
    // No client CA: nothing verified to check.
    let mut no_ca = file.clone();
    no_ca.client_ca = None;
    let l = lines(validate_serve(no_ca));
    for key in ["allow_cn", "allow_dns", "allow_uri"] {
        assert!(
            has(&l, &format!("serve.{key}:"), "requires `client_ca`"),
            "{l:?}"
        );
    }
    let mut empty = file;
    empty.allow_dns = Some(vec!["ok.example".into(), " ".into()]);
    let l = lines(validate_serve(empty));
    assert_eq!(
        l,
        ["serve.allow_dns[1]: an empty name matches no certificate"],
        "{l:?}"
    );
}

#[test]
fn identity_flags_repeat() {
    use clap::Parser;
    let cli = FlagsCli::try_parse_from([
        "dtlsd",
        "serve",
        "--allow-cn",
        "a",
        "--allow-cn",
        "b",
        "--allow-dns",
        "c.example",
        "--allow-uri",
        "spiffe://x/y",
    ])
    .expect("flags parse");
    let FlagsCommand::Serve(s) = cli.command else {
        panic!("expected serve");
    };
    assert_eq!(s.allow_cn, ["a", "b"]);
    assert_eq!(s.allow_dns, ["c.example"]);
    assert_eq!(s.allow_uri, ["spiffe://x/y"]);
    assert!(FlagsCli::try_parse_from(["dtlsd", "connect", "--allow-cn", "a"]).is_err());
}

#[test]
fn a_reload_applies_access_keys_and_names_the_other_limits() {
    let before = validate_serve(serve_with_limits("psk = [\"a:00ff\"]", "")).expect("valid");
    let after = validate_serve(serve_with_limits(
        "psk = [\"a:00ff\"]",
        "handshakes_per_second = 5\nhandshake_burst = 5\nsessions_per_address = 5\n\
         allow = [\"10.0.0.0/8\"]\ndeny = [\"10.1.0.0/16\"]",
    ))
    .expect("valid");
    assert!(before.restart_required(&after).is_empty());
    let capped = validate_serve(serve_with_limits("psk = [\"a:00ff\"]", "max_half_open = 5"))
        .expect("valid");
    assert_eq!(before.restart_required(&capped), ["limits"]);
}
