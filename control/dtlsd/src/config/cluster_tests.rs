//! `node_id`, `node_name` and `[[nodes]]`: parsing, validation, flags.

use super::super::merge::{ServeFlags, merge_serve};
use super::super::raw::{RawConfig, RawServe, parse_str};
use super::super::validate::validate_serve;
use super::*;

const BASE: &str = "[serve]\nlisten = \"0.0.0.0:4433\"\nbackend = \"127.0.0.1:9000\"\n\
                    psk = [\"a:0011\"]\n";

fn serve(text: &str) -> RawServe {
    match parse_str(&format!("{BASE}{text}")).expect("parses") {
        RawConfig::Serve(s) => s,
        RawConfig::Connect(_) => panic!("expected a serve table"),
    }
}

fn errors(raw: RawServe) -> Vec<String> {
    validate_serve(raw)
        .expect_err("should be invalid")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const FLEET: &str = "[[nodes]]\nid = 1\nname = \"worker-a\"\naddress = \"10.0.0.1:4434\"\n\
                     [[nodes]]\nid = 2\nname = \"worker-b\"\naddress = \"10.0.0.2:4434\"\n";

#[test]
fn alone_the_node_id_defaults_to_zero_and_can_be_set() {
    let c = validate_serve(serve("")).expect("valid");
    assert_eq!(c.cluster, Cluster::default());
    let c = validate_serve(serve("node_id = 200\n")).expect("valid");
    assert_eq!(c.cluster.node_id, 200);
    assert!(c.cluster.nodes.is_empty());
    let l = errors(serve("node_id = 256\n"));
    assert_eq!(
        l,
        ["serve.node_id: 256 is out of range: must be between 0 and 255"]
    );
}

#[test]
fn a_fleet_is_listed_and_the_own_id_picked_by_id_or_name() {
    let c = validate_serve(serve(&format!("node_id = 2\n{FLEET}"))).expect("valid");
    assert_eq!(c.cluster.node_id, 2);
    assert_eq!(c.cluster.nodes.len(), 2);
    let b = c.cluster.node(2).expect("listed");
    assert_eq!(b.name.as_deref(), Some("worker-b"));
    assert_eq!(b.address, "10.0.0.2:4434".parse().expect("addr"));
    let c = validate_serve(serve(&format!("node_name = \"worker-a\"\n{FLEET}"))).expect("valid");
    assert_eq!(c.cluster.node_id, 1);
    // A flag replaces the file's choice (the DaemonSet passes --node-name).
    let flags = ServeFlags {
        node_name: Some("worker-b".into()),
        ..ServeFlags::default()
    };
    let merged = merge_serve(serve(&format!("node_id = 1\n{FLEET}")), flags);
    assert_eq!(validate_serve(merged).expect("valid").cluster.node_id, 2);
    let flags = ServeFlags {
        node_id: Some(1),
        ..ServeFlags::default()
    };
    let merged = merge_serve(serve(&format!("node_name = \"worker-b\"\n{FLEET}")), flags);
    assert_eq!(validate_serve(merged).expect("valid").cluster.node_id, 1);
}

#[test]
fn the_own_id_must_be_listed_and_known() {
    let l = errors(serve(&format!("node_id = 3\n{FLEET}")));
    assert_eq!(l, ["serve.node_id: `3` is not listed in [[nodes]]"]);
    let l = errors(serve(&format!("node_name = \"worker-z\"\n{FLEET}")));
    assert_eq!(
        l,
        ["serve.node_name: `worker-z` is not listed in [[nodes]]"]
    );
    let l = errors(serve(FLEET));
    assert!(l[0].starts_with("serve.node_id: missing"), "{l:?}");
    let l = errors(serve("node_name = \"worker-a\"\n"));
    assert_eq!(l, ["serve.node_name: requires `[[nodes]]` to be set too"]);
    let l = errors(serve(&format!(
        "node_id = 1\nnode_name = \"worker-a\"\n{FLEET}"
    )));
    assert_eq!(l, ["serve.node_name: cannot be combined with `node_id`"]);
}

#[test]
fn bad_nodes_are_named() {
    let l = errors(serve(
        "node_id = 1\n\
         [[nodes]]\nid = 1\naddress = \"10.0.0.1:4434\"\n\
         [[nodes]]\nid = 1\nname = \"\"\naddress = \"10.0.0.1:4434\"\n\
         [[nodes]]\nid = 300\naddress = \"nowhere\"\n\
         [[nodes]]\naddress = \"0.0.0.0:4434\"\n\
         [[nodes]]\nid = 5\n",
    ));
    for (prefix, fragment) in [
        ("nodes[1].id:", "`1` is given twice"),
        ("nodes[1].name:", "must not be empty"),
        ("nodes[1].address:", "`10.0.0.1:4434` is given twice"),
        ("nodes[2].id:", "300 is out of range"),
        (
            "nodes[2].address:",
            "`nowhere` is not a usable socket address",
        ),
        ("nodes[3].id:", "missing"),
        ("nodes[3].address:", "unspecified address"),
        ("nodes[4].address:", "missing"),
    ] {
        assert!(
            l.iter()
                .any(|e| e.starts_with(prefix) && e.contains(fragment)),
            "{prefix} {fragment}: {l:?}"
        );
    }
    // Unknown keys of a node are named with their table.
    let e = parse_str(&format!("{BASE}[[nodes]]\nid = 1\nport = 3\n")).expect_err("unknown");
    assert_eq!(e.key.as_deref(), Some("nodes.port"), "{e}");
    // [[nodes]] belongs to serve.
    let e = parse_str(
        "[connect]\nlisten = \"127.0.0.1:1\"\nserver = \"127.0.0.1:2\"\n\
         [[nodes]]\nid = 1\naddress = \"10.0.0.1:4434\"\n",
    )
    .expect_err("connect");
    assert_eq!(e.key.as_deref(), Some("nodes"));
}

#[test]
fn changing_the_node_needs_a_restart() {
    let a = validate_serve(serve(&format!("node_id = 1\n{FLEET}"))).expect("valid");
    let b = validate_serve(serve(&format!("node_id = 2\n{FLEET}"))).expect("valid");
    assert_eq!(a.restart_required(&b), ["node_id"]);
    let c = validate_serve(serve(
        "node_id = 1\n[[nodes]]\nid = 1\naddress = \"10.0.0.1:1\"\n",
    ))
    .expect("valid");
    assert_eq!(a.restart_required(&c), ["nodes"]);
}
