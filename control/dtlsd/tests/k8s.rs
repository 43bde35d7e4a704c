//! The Kubernetes manifests in control/dtlsd/deploy/k8s/, checked offline (no API server
//! here): parsed as YAML, and the fields the daemon relies on checked against each other and
//! against dtlsd's own configuration parser: host networking, the node name from the
//! downward API passed as --node-name, the config file and the key store mounted where the
//! arguments and the configuration say, a key store that parses once its placeholders are
//! filled, a grace period longer than the drain, probes on the metrics port.

use std::path::Path;

use dtlsd::config::cluster;
use dtlsd::config::merge::{ServeFlags, merge_serve};
use dtlsd::config::raw::{RawConfig, parse_str};
use dtlsd::keystore::KeyStore;
use serde_norway::Value;

fn manifest(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/k8s")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("read manifest");
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value at a path of keys (strings) and indices (numbers as strings prefixed `#`).
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.strip_prefix('#') {
        Some(i) => &v[i.parse::<usize>().expect("index")],
        None => &v[k],
    })
}

fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string: {:?}", at(v, path)))
}

fn list<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{path} is not a list"))
}

/// The volume mounted at the directory holding `file`, and the name of the file in it.
fn volume_for<'a>(pod: &'a Value, container: &Value, file: &'a str) -> (&'a Value, &'a str) {
    let path = Path::new(file);
    let dir = path.parent().and_then(Path::to_str).expect("a directory");
    let name = path.file_name().and_then(|n| n.to_str()).expect("a file");
    let mount = list(container, "volumeMounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(dir))
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    assert_eq!(mount["readOnly"].as_bool(), Some(true), "{dir} read-only");
    assert!(
        mount["subPath"].is_null(),
        "{dir}: a subPath is never refreshed"
    );
    let volume = list(pod, "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {:?}", mount["name"]));
    (volume, name)
}

#[test]
fn the_daemonset_configmap_and_secret_fit_together_and_the_daemon() {
    let ds = manifest("daemonset.yaml");
    let cm = manifest("configmap.yaml");
    let secret = manifest("secret.example.yaml");
    assert_eq!(text(&ds, "kind"), "DaemonSet");
    assert_eq!(text(&cm, "kind"), "ConfigMap");
    assert_eq!(text(&secret, "kind"), "Secret");
    let pod = at(&ds, "spec.template.spec");
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true), "host networking");
    assert_eq!(text(pod, "dnsPolicy"), "ClusterFirstWithHostNet");
    let c = &list(pod, "containers")[0];

    // The node's name from the downward API, passed as --node-name.
    let env = list(c, "env")
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME in env");
    assert_eq!(text(env, "valueFrom.fieldRef.fieldPath"), "spec.nodeName");
    let args: Vec<&str> = list(c, "args").iter().filter_map(Value::as_str).collect();
    assert_eq!(args[0], "serve");
    let after = |flag: &str| {
        let i = args.iter().position(|a| *a == flag).expect(flag);
        args[i + 1]
    };
    assert_eq!(after("--node-name"), "$(NODE_NAME)");

    // The config file is the ConfigMap's key, mounted where --config says.
    let (volume, file) = volume_for(pod, c, after("--config"));
    assert_eq!(text(volume, "configMap.name"), text(&cm, "metadata.name"));
    let toml = cm["data"][file]
        .as_str()
        .expect("the ConfigMap holds the file");
    let raw = match parse_str(toml).unwrap_or_else(|e| panic!("{file}: {e}")) {
        RawConfig::Serve(s) => s,
        RawConfig::Connect(_) => panic!("a serve configuration"),
    };
    assert!(
        raw.node_id.is_none() && raw.node_name.is_none(),
        "identity from the flag"
    );

    // Every listed node's name, given as --node-name, names its own id.
    assert!(raw.nodes.len() >= 2, "a fleet");
    for node in &raw.nodes {
        let name = node.name.clone().expect("every node named");
        let flags = ServeFlags {
            node_name: Some(name.clone()),
            ..ServeFlags::default()
        };
        let merged = merge_serve(raw.clone(), flags);
        let mut errors = Vec::new();
        let fleet = cluster::validate(
            merged.node_id,
            merged.node_name.as_deref(),
            &merged.nodes,
            &mut errors,
        );
        assert!(errors.is_empty(), "{name}: {errors:?}");
        assert_eq!(fleet.map(|f| Some(i64::from(f.node_id))), Some(node.id));
    }

    // The key store is the Secret's key, mounted where key_store says, and parses once
    // its placeholders are real secrets.
    let store = raw
        .key_store
        .as_deref()
        .and_then(Path::to_str)
        .expect("key_store");
    let (volume, file) = volume_for(pod, c, store);
    assert_eq!(
        text(volume, "secret.secretName"),
        text(&secret, "metadata.name")
    );
    let keys = secret["stringData"][file]
        .as_str()
        .expect("the Secret holds the key store");
    assert!(
        KeyStore::parse(keys).is_err(),
        "the example must not work as it is"
    );
    let filled = keys.replace("REPLACE_WITH_64_HEX_DIGITS", &"5a".repeat(32));
    let store = KeyStore::parse(&filled).expect("the example's shape is a key store");
    // The ConfigMap lists other nodes: the daemon refuses to start without forwarding
    // secrets.
    assert!(store.forwards.is_some(), "forward_secrets in the example");

    // Certificate and key from a mounted Secret.
    for f in [&raw.cert, &raw.key] {
        let path = f.as_deref().and_then(Path::to_str).expect("cert and key");
        let (volume, _) = volume_for(pod, c, path);
        assert!(
            volume["secret"]["secretName"].is_string(),
            "{path} from a Secret"
        );
    }

    // SIGTERM drains for drain_timeout: the pod gets longer than that.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace");
    assert!(grace > raw.drain_timeout.expect("drain_timeout"), "{grace}");
    // Probes ask /healthz on the metrics port.
    let metrics: std::net::SocketAddr = raw
        .metrics
        .as_deref()
        .expect("metrics")
        .parse()
        .expect("address");
    assert!(
        metrics.ip().is_unspecified(),
        "the kubelet probes the node's address"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(text(c, &format!("{probe}.httpGet.path")), "/healthz");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_u64(),
            Some(u64::from(metrics.port()))
        );
    }
    let listen = raw.listen.expect("listen").entries()[0].1.to_owned();
    let port: std::net::SocketAddr = listen.parse().expect("listen address");
    assert!(list(c, "ports").iter().any(|p| {
        p["containerPort"].as_u64() == Some(u64::from(port.port()))
            && p["protocol"].as_str() == Some("UDP")
    }));
}
