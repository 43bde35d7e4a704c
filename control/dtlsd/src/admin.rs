//! The admin socket: `dtlsd status` and `dtlsd kick` talk to a running daemon over a UNIX
//! stream socket (mode 0600).
//!
//! Protocol: the client writes one line, `status` or `kick TARGET` (TARGET: a session id, a
//! peer `IP:PORT`, or a peer `IP` for all its sessions), and reads one line of JSON back:
//! `{"daemon": {...}, "sessions": [...], "shards_unanswered": [...]}`, `{"kicked": [ids]}`
//! or `{"error": "..."}`. One request per connection. `daemon` describes the daemon
//! (`mode`, `listen` addresses, each shard's `shard_listen`, and for `serve` the `backend`,
//! `upstream_source` and `proxy_protocol`, for `connect` the `server`); each session row
//! names the `listen` address of its shard, and in `connect` mode its `source`: the local
//! plaintext source that owns the session (the same address as `peer`).
//!
//! Where the data comes from, without touching the per-packet path: the admin thread asks
//! the control thread for what it knows of each installed session (peer, identity, version,
//! suite, shard, CID, establishment time) through a channel the control loop drains once per
//! turn, and asks every shard for a snapshot of its sessions
//! ([`dtls_shard::SessionSnapshots`]: the shard checks one atomic per turn and, when asked,
//! copies each session's address, idle time and counters under a lock held only for the
//! copy). The two are joined by session handle. A kick goes to the control thread, which
//! closes the sessions through their shards with close_notify, as a reload's revocation does.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use dtls_runtime::{AdminRequest, KickTarget, SessionInfo};
use dtls_shard::{SessionId, SessionSnapshots, SessionView};
use serde_json::{Value, json};

use crate::sessionlog::describe_identity;

/// Where default admin sockets live (created 0700).
pub const RUN_DIR: &str = "/run/dtlsd";
/// Longest wait for the control thread's or a shard's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for a client's request line, and for writing the answer.
const CLIENT_WAIT: Duration = Duration::from_secs(2);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 512;
/// How often an idle admin thread looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The default admin socket of a daemon in `mode` ("serve" or "connect") on `listen`:
/// `/run/dtlsd/MODE-IP-PORT.sock`, one per listen address.
pub fn default_path(mode: &str, listen: SocketAddr) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{mode}-{}-{}.sock", listen.ip(), listen.port()))
}

/// A running admin thread; dropping it does not stop it, [`AdminServer::stop`] does.
#[derive(Debug)]
pub struct AdminServer {
    path: PathBuf,
    /// The socket file's inode, to remove it at exit only if it is still ours (a restarted
    /// daemon started with takeover may have replaced it).
    inode: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Listens on `path` (parent directories made 0700 when missing) and serves requests
    /// against `control` and the shards' `snapshots`. A live socket of another daemon at
    /// `path` is an error unless `takeover` (then it is replaced); a stale file from a
    /// daemon that died is replaced.
    ///
    /// # Errors
    /// The directory or socket cannot be made, or another daemon holds `path`.
    pub fn start(
        path: &Path,
        takeover: bool,
        control: Vec<mpsc::Sender<AdminRequest>>,
        snapshots: Vec<Arc<SessionSnapshots>>,
        about: Value,
    ) -> anyhow::Result<Self> {
        let listener = bind(path, takeover)?;
        listener
            .set_nonblocking(true)
            .context("admin socket: set_nonblocking")?;
        let meta =
            fs::metadata(path).with_context(|| format!("admin socket {}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("dtlsd-admin".into())
                .spawn(move || serve(&listener, &control, &snapshots, &about, &stop))
                .context("spawning the admin thread")?
        };
        Ok(Self {
            path: path.to_path_buf(),
            inode: (meta.dev(), meta.ino()),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the thread and removes the socket file if it is still this daemon's.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(meta) = fs::metadata(&self.path)
            && (meta.dev(), meta.ino()) == self.inode
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn bind(path: &Path, takeover: bool) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("admin socket: cannot create {}", dir.display()))?;
    }
    let listener = match UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let is_socket = fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
            if !is_socket {
                bail!(
                    "admin socket {}: a file that is not a socket is in the way",
                    path.display()
                );
            }
            if UnixStream::connect(path).is_ok() && !takeover {
                bail!(
                    "admin socket {} is in use by another running dtlsd (stop it, start this \
                     one with --takeover for a restart, or set admin_socket)",
                    path.display()
                );
            }
            // A stale socket of a daemon that died, or the one a restart takes over.
            fs::remove_file(path)
                .with_context(|| format!("admin socket: cannot replace {}", path.display()))?;
            UnixListener::bind(path)
                .with_context(|| format!("admin socket: cannot listen on {}", path.display()))?
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("admin socket: cannot listen on {}", path.display()));
        }
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("admin socket: chmod 0600 {}", path.display()))?;
    Ok(listener)
}

fn serve(
    listener: &UnixListener,
    control: &[mpsc::Sender<AdminRequest>],
    snapshots: &[Arc<SessionSnapshots>],
    about: &Value,
    stop: &AtomicBool,
) {
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, control, snapshots, about) {
                    tracing::debug!(error = %e, "admin request not answered");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_POLL),
            Err(e) => {
                tracing::warn!(error = %e, "admin socket accept failed");
                std::thread::sleep(ACCEPT_POLL);
            }
        }
    }
}

fn answer(
    stream: UnixStream,
    control: &[mpsc::Sender<AdminRequest>],
    snapshots: &[Arc<SessionSnapshots>],
    about: &Value,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_WAIT))?;
    stream.set_write_timeout(Some(CLIENT_WAIT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match line.trim().split_once(' ').unwrap_or((line.trim(), "")) {
        ("status", "") => status(control, snapshots, about),
        ("kick", target) if !target.is_empty() => kick(control, target),
        _ => {
            json!({ "error": format!("unknown request `{}`: expected `status` or `kick TARGET`", line.trim()) })
        }
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}

fn status(
    control: &[mpsc::Sender<AdminRequest>],
    snapshots: &[Arc<SessionSnapshots>],
    about: &Value,
) -> Value {
    // Ask the shards first: they answer while control does.
    let generations: Vec<u64> = snapshots.iter().map(|s| s.request()).collect();
    // Every handshake worker holds its own sessions.
    let (reply, answer) = mpsc::channel();
    for worker in control {
        if worker.send(AdminRequest::Sessions(reply.clone())).is_err() {
            return json!({ "error": "the control thread has stopped" });
        }
    }
    let mut sessions = Vec::new();
    for _ in control {
        let Ok(some) = answer.recv_timeout(ANSWER_WAIT) else {
            return json!({ "error": "the control thread did not answer" });
        };
        sessions.extend(some);
    }
    let mut views: HashMap<SessionId, SessionView> = HashMap::new();
    let mut unanswered = Vec::new();
    for (shard, (snap, generation)) in snapshots.iter().zip(generations).enumerate() {
        match snap.wait(generation, ANSWER_WAIT) {
            Some(rows) => views.extend(rows.into_iter().map(|v| (v.session, v))),
            None => unanswered.push(shard),
        }
    }
    let (now, wall) = (Instant::now(), SystemTime::now());
    let connect = about["mode"] == "connect";
    let mut rows: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let mut row = session_json(s, views.get(&s.session), now, wall);
            row["listen"] = about["shard_listen"][s.shard].clone();
            if connect {
                // A connect session belongs to the local source it carries.
                row["source"] = row["peer"].clone();
            }
            row
        })
        .collect();
    rows.sort_by_key(|r| r["id"].as_u64());
    json!({ "daemon": about, "sessions": rows, "shards_unanswered": unanswered })
}

fn session_json(
    s: &SessionInfo,
    view: Option<&SessionView>,
    now: Instant,
    wall: SystemTime,
) -> Value {
    let established = wall
        .checked_sub(now.saturating_duration_since(s.established))
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let counters = view.map(|v| {
        json!({
            "records_in": v.counters.records_opened,
            "records_out": v.counters.records_sealed,
            "bytes_in": v.counters.plaintext_in,
            "bytes_out": v.counters.plaintext_out,
            "drops": v.counters.drops,
        })
    });
    json!({
        "id": s.session.get(),
        // The shard's address is the current one (a connection ID may have moved it).
        "peer": view.map_or(s.peer, |v| v.peer).to_string(),
        "shard": s.shard,
        "version": s.version,
        "suite": format!("{:?}", s.suite),
        "identity": describe_identity(&s.identity),
        "cid": s.cid.as_deref().map(hex),
        "established_unix": established,
        "idle_secs": view.map(|v| v.idle.as_secs_f64()),
        "traffic": counters,
    })
}

fn kick(control: &[mpsc::Sender<AdminRequest>], target: &str) -> Value {
    let Some(target) = parse_target(target) else {
        return json!({ "error": format!("`{target}` is not a session id, IP:PORT or IP") });
    };
    // Every handshake worker closes the sessions it holds that match.
    let (reply, answer) = mpsc::channel();
    for worker in control {
        let reply = reply.clone();
        if worker.send(AdminRequest::Kick { target, reply }).is_err() {
            return json!({ "error": "the control thread has stopped" });
        }
    }
    let mut kicked = Vec::new();
    for _ in control {
        match answer.recv_timeout(ANSWER_WAIT) {
            Ok(ids) => kicked.extend(ids.iter().map(|id| id.get())),
            Err(_) => return json!({ "error": "the control thread did not answer" }),
        }
    }
    kicked.sort_unstable();
    json!({ "kicked": kicked })
}

/// A kick target: a session id, a peer `IP:PORT`, or a peer `IP`.
pub fn parse_target(s: &str) -> Option<KickTarget> {
    if let Ok(id) = s.parse::<u64>() {
        return Some(KickTarget::Session(SessionId::new(id)));
    }
    if let Ok(peer) = s.parse::<SocketAddr>() {
        return Some(KickTarget::Peer(peer));
    }
    s.parse::<IpAddr>().ok().map(KickTarget::Address)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- the client side: `dtlsd status` and `dtlsd kick` ----

/// The admin socket to talk to: `given`, or the only live socket in [`RUN_DIR`].
///
/// # Errors
/// None or several sockets in [`RUN_DIR`] when none was given.
pub fn resolve_socket(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let mut found: Vec<PathBuf> = fs::read_dir(RUN_DIR)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                // A daemon killed without cleaning up leaves its socket file behind.
                .filter(|p| UnixStream::connect(p).is_ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!(
            "no admin socket in {RUN_DIR}: is dtlsd running? (give its socket with --admin-socket)"
        ),
        _ => bail!(
            "several dtlsd admin sockets in {RUN_DIR}; choose one with --admin-socket: {}",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Sends `request` to the daemon at `socket` and returns its JSON answer.
///
/// # Errors
/// The socket cannot be reached, the daemon did not answer, or answered an error.
pub fn request(socket: &Path, request: &str) -> anyhow::Result<Value> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot reach dtlsd at {}", socket.display()))?;
    let wait = ANSWER_WAIT * 3;
    stream.set_read_timeout(Some(wait))?;
    stream.set_write_timeout(Some(wait))?;
    stream.write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    let value: Value = serde_json::from_str(&line)
        .with_context(|| format!("dtlsd at {} sent no answer", socket.display()))?;
    if let Some(e) = value.get("error").and_then(Value::as_str) {
        return Err(anyhow!("dtlsd: {e}"));
    }
    Ok(value)
}

/// Which sessions `dtlsd status` shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only sessions of this peer: an `IP` or an `IP:PORT`.
    pub peer: Option<String>,
    /// Only sessions whose identity contains this text.
    pub identity: Option<String>,
}

impl Filter {
    /// Whether the session row `s` passes.
    pub fn admits(&self, s: &Value) -> bool {
        let peer = s["peer"].as_str().unwrap_or_default();
        let peer_ok = self.peer.as_deref().is_none_or(|want| {
            peer == want
                || peer
                    .parse::<SocketAddr>()
                    .is_ok_and(|p| want.parse::<IpAddr>().is_ok_and(|ip| ip == p.ip()))
        });
        let identity = s["identity"].as_str().unwrap_or_default();
        peer_ok
            && self
                .identity
                .as_deref()
                .is_none_or(|want| identity.contains(want))
    }
}

/// The rows of a `status` answer that `filter` admits.
pub fn filtered(answer: &Value, filter: &Filter) -> Vec<Value> {
    answer["sessions"]
        .as_array()
        .map(|rows| rows.iter().filter(|s| filter.admits(s)).cloned().collect())
        .unwrap_or_default()
}

/// The line above `dtlsd status`'s table: what the daemon is and how it relays, from the
/// answer's `daemon` object.
pub fn header(about: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
    let listen = about["listen"].as_array().map_or_else(
        || "-".to_owned(),
        |list| list.iter().map(text).collect::<Vec<_>>().join(","),
    );
    match about["mode"].as_str() {
        Some("serve") => format!(
            "dtlsd serve on {listen} -> backend {}; upstream source: {}; proxy protocol: {}\n",
            text(&about["backend"]),
            text(&about["upstream_source"]),
            text(&about["proxy_protocol"]),
        ),
        Some("connect") => format!(
            "dtlsd connect on {listen} -> server {}; SOURCE: the local source owning each session\n",
            text(&about["server"]),
        ),
        _ => String::new(),
    }
}

/// `dtlsd status` as a table: one line per session (the first column names the client in
/// `serve` mode, the local source in `connect` mode).
pub fn table(rows: &[Value], now_unix: u64, connect: bool) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:>6}  {:<22} {:<22} {:>5} {:<4} {:<40} {:>8} {:>7} {:>10} {:>12} {:>10} {:>12}  {:<16} {}\n",
        "ID",
        if connect { "SOURCE" } else { "PEER" },
        "LISTEN",
        "SHARD",
        "VER",
        "SUITE",
        "UP",
        "IDLE",
        "RX_REC",
        "RX_BYTES",
        "TX_REC",
        "TX_BYTES",
        "CID",
        "IDENTITY"
    );
    for s in rows {
        let up = now_unix.saturating_sub(s["established_unix"].as_u64().unwrap_or(now_unix));
        let idle = s["idle_secs"]
            .as_f64()
            .map_or_else(|| "-".into(), |i| format!("{i:.1}s"));
        let t = &s["traffic"];
        let n = |k: &str| t[k].as_u64().map_or_else(|| "-".into(), |v| v.to_string());
        let _ = writeln!(
            out,
            "{:>6}  {:<22} {:<22} {:>5} {:<4} {:<40} {:>8} {:>7} {:>10} {:>12} {:>10} {:>12}  {:<16} {}",
            s["id"].as_u64().unwrap_or_default(),
            s["peer"].as_str().unwrap_or("-"),
            s["listen"].as_str().unwrap_or("-"),
            s["shard"].as_u64().unwrap_or_default(),
            s["version"].as_str().unwrap_or("-"),
            s["suite"].as_str().unwrap_or("-"),
            format!("{up}s"),
            idle,
            n("records_in"),
            n("bytes_in"),
            n("records_out"),
            n("bytes_out"),
            s["cid"].as_str().unwrap_or("-"),
            s["identity"].as_str().unwrap_or("-"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_targets_are_ids_peers_or_addresses() {
        assert_eq!(
            parse_target("7"),
            Some(KickTarget::Session(SessionId::new(7)))
        );
        assert_eq!(
            parse_target("127.0.0.1:5000"),
            Some(KickTarget::Peer("127.0.0.1:5000".parse().expect("addr")))
        );
        assert_eq!(
            parse_target("[::1]:5000"),
            Some(KickTarget::Peer("[::1]:5000".parse().expect("addr")))
        );
        assert_eq!(
            parse_target("10.0.0.9"),
            Some(KickTarget::Address("10.0.0.9".parse().expect("ip")))
        );
        assert_eq!(parse_target("nobody"), None);
    }

    #[test]
    fn the_default_socket_names_mode_and_listen_address() {
        let listen = "127.0.0.1:4433".parse().expect("addr");
        assert_eq!(
            default_path("serve", listen),
            Path::new("/run/dtlsd/serve-127.0.0.1-4433.sock")
        );
        let v6 = "[::1]:4433".parse().expect("addr");
        assert_eq!(
            default_path("connect", v6),
            Path::new("/run/dtlsd/connect-::1-4433.sock")
        );
    }

    #[test]
    fn filters_match_peer_ip_or_address_and_identity_text() {
        let row = json!({ "peer": "127.0.0.5:6000", "identity": "cert:CN=client [DNS:a]" });
        let f = |peer: Option<&str>, identity: Option<&str>| Filter {
            peer: peer.map(str::to_owned),
            identity: identity.map(str::to_owned),
        };
        assert!(f(None, None).admits(&row));
        assert!(f(Some("127.0.0.5"), None).admits(&row));
        assert!(f(Some("127.0.0.5:6000"), Some("CN=client")).admits(&row));
        assert!(!f(Some("127.0.0.5:6001"), None).admits(&row));
        assert!(!f(Some("127.0.0.6"), None).admits(&row));
        assert!(!f(None, Some("psk:")).admits(&row));
    }

    #[test]
    fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = std::env::temp_dir().join(format!("dtlsd-admin-{}", std::process::id()));
        let path = dir.join("sub").join("a.sock");
        let (tx, _rx) = mpsc::channel();
        let first = AdminServer::start(&path, false, vec![tx.clone()], Vec::new(), Value::Null)
            .expect("first");
        let mode = fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("dir"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let err = AdminServer::start(&path, false, vec![tx.clone()], Vec::new(), Value::Null)
            .expect_err("in use");
        assert!(
            err.to_string().contains("in use by another running dtlsd"),
            "{err}"
        );
        // A takeover replaces it; the first daemon's exit leaves the new socket in place.
        let second = AdminServer::start(&path, true, vec![tx.clone()], Vec::new(), Value::Null)
            .expect("takeover");
        first.stop();
        assert!(path.exists(), "the new daemon's socket stays");
        second.stop();
        assert!(!path.exists(), "removed at exit");
        // A stale socket file (its daemon died without removing it) is replaced.
        drop(UnixListener::bind(&path).expect("stale"));
        let third = AdminServer::start(&path, false, vec![tx], Vec::new(), Value::Null)
            .expect("stale replaced");
        third.stop();
        let _ = fs::remove_dir_all(&dir);
    }
}
