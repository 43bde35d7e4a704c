//! `node_id`, `node_name` and the `[[nodes]]` tables: which node of a fleet this daemon is,
//! and the other nodes.
//!
//! The node id is the first half of the server ID in the QUIC-LB connection IDs this
//! server issues (`dtls_runtime::ShardCids`: 8 bits of node, 8 bits of shard), so a
//! record's CID names the node that owns its session. Without `[[nodes]]` the daemon is a
//! fleet of one with `node_id` (default 0). With them, the own id must be one of the
//! listed ones, given as `node_id` or picked by `node_name` (a Kubernetes DaemonSet passes
//! the node's name from the downward API; see `docs/scale-out.md`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::error::{ConfigError, Problem};

/// Bounds of a node id: the 8 bits of node in our CIDs' server ID.
pub const NODE_ID_RANGE: (i64, i64) = (0, 255);

/// One `[[nodes]]` table as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// The node's id (0 to 255).
    pub id: Option<i64>,
    /// The node's name (a Kubernetes node name, a host name), matched by `node_name`.
    pub name: Option<String>,
    /// The UDP address (IP:PORT) where the node takes records other nodes forward to it.
    pub address: Option<String>,
}

/// One node of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its id, as CIDs carry it.
    pub id: u8,
    /// Its name, when given.
    pub name: Option<String>,
    /// Where other nodes forward records whose CID names it.
    pub address: SocketAddr,
}

/// Which node this daemon is and which nodes there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    /// This node's id, carried in every CID it issues.
    pub node_id: u8,
    /// Every node, this one included; empty for a daemon on its own.
    pub nodes: Vec<Node>,
}

impl Cluster {
    /// The other nodes' entry with id `id`, if listed.
    pub fn node(&self, id: u8) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

fn error(key: String, problem: Problem) -> ConfigError {
    ConfigError {
        key: Some(key),
        problem,
    }
}

fn node_id(key: String, value: i64, errors: &mut Vec<ConfigError>) -> Option<u8> {
    let (min, max) = NODE_ID_RANGE;
    match u8::try_from(value) {
        Ok(id) => Some(id),
        Err(_) => {
            errors.push(error(key, Problem::OutOfRange { value, min, max }));
            None
        }
    }
}

/// Validates `serve.node_id`, `serve.node_name` and `[[nodes]]`, pushing one error per bad
/// key (`serve.node_id`, `nodes[2].address`, ...).
pub fn validate(
    own_id: Option<i64>,
    own_name: Option<&str>,
    raw: &[RawNode],
    errors: &mut Vec<ConfigError>,
) -> Option<Cluster> {
    let before = errors.len();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = |k: &str| format!("nodes[{i}].{k}");
        let id = match r.id {
            None => {
                errors.push(error(
                    key("id"),
                    Problem::Missing {
                        flag: "a [[nodes]] id",
                    },
                ));
                None
            }
            Some(v) => node_id(key("id"), v, errors),
        };
        if let Some(id) = id
            && nodes.iter().any(|n| n.id == id)
        {
            errors.push(error(
                key("id"),
                Problem::Duplicate {
                    value: id.to_string(),
                },
            ));
        }
        let name = match r.name.as_deref() {
            Some(n) if n.trim().is_empty() => {
                errors.push(error(key("name"), Problem::Empty));
                None
            }
            Some(n) if nodes.iter().any(|o| o.name.as_deref() == Some(n)) => {
                errors.push(error(
                    key("name"),
                    Problem::Duplicate {
                        value: n.to_owned(),
                    },
                ));
                None
            }
            other => other.map(str::to_owned),
        };
        let address = match r.address.as_deref() {
            None => {
                errors.push(error(
                    key("address"),
                    Problem::Missing {
                        flag: "a [[nodes]] address",
                    },
                ));
                None
            }
            Some(value) => node_address(key("address"), value, errors),
        };
        if let Some(address) = address
            && nodes.iter().any(|n| n.address == address)
        {
            errors.push(error(
                key("address"),
                Problem::Duplicate {
                    value: address.to_string(),
                },
            ));
        }
        if let (Some(id), Some(address)) = (id, address) {
            nodes.push(Node { id, name, address });
        }
    }
    let own = match (own_id, own_name) {
        (Some(_), Some(_)) => {
            errors.push(error(
                "serve.node_name".to_owned(),
                Problem::Conflicts { other: "node_id" },
            ));
            None
        }
        (Some(v), None) => {
            let id = node_id("serve.node_id".to_owned(), v, errors);
            if let Some(id) = id
                && !raw.is_empty()
                && !nodes.iter().any(|n| n.id == id)
            {
                errors.push(error(
                    "serve.node_id".to_owned(),
                    Problem::NodeNotListed {
                        value: id.to_string(),
                    },
                ));
            }
            id
        }
        (None, Some(name)) => {
            if raw.is_empty() {
                errors.push(error(
                    "serve.node_name".to_owned(),
                    Problem::Requires { other: "[[nodes]]" },
                ));
                None
            } else if let Some(node) = nodes.iter().find(|n| n.name.as_deref() == Some(name)) {
                Some(node.id)
            } else {
                errors.push(error(
                    "serve.node_name".to_owned(),
                    Problem::NodeNotListed {
                        value: name.to_owned(),
                    },
                ));
                None
            }
        }
        (None, None) if !raw.is_empty() => {
            // A fleet's nodes must each know who they are: a default would let two nodes
            // issue CIDs naming the same owner.
            errors.push(error(
                "serve.node_id".to_owned(),
                Problem::Missing {
                    flag: "--node-id or --node-name, since [[nodes]] is given",
                },
            ));
            None
        }
        (None, None) => Some(0),
    };
    if errors.len() > before {
        return None;
    }
    Some(Cluster {
        node_id: own?,
        nodes,
    })
}

fn node_address(key: String, value: &str, errors: &mut Vec<ConfigError>) -> Option<SocketAddr> {
    let bad = |reason: &str| Problem::BadAddress {
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    match value.parse::<SocketAddr>() {
        Err(_) => errors.push(error(
            key,
            bad("expected IP:PORT such as 10.0.0.2:4434 (host names are not resolved)"),
        )),
        Ok(a) if a.port() == 0 => errors.push(error(key, bad("port 0 cannot be sent to"))),
        Ok(a) if a.ip().is_unspecified() => {
            errors.push(error(key, bad("an unspecified address cannot be sent to")))
        }
        Ok(a) => return Some(a),
    }
    None
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
