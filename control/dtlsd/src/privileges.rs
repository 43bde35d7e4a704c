//! Running unprivileged: `--user NAME` / `--group NAME` (keys `user`, `group`).
//!
//! The daemon starts as root, binds its listen sockets (ports below 1024 included), reads its
//! certificate, key, CA and PSKs, makes its admin socket, then [`drop_to`] gives up root for
//! good: the supplementary groups become the one group (`setgroups`), then `setgid`, then
//! `setuid`, in that order (once the user id changes, the group ids can no longer be). glibc
//! applies each call to every thread of the process, so the shard, control, admin and
//! metrics threads already running change with the main thread. Afterwards regaining root
//! must fail, and is checked.
//!
//! What no longer works afterwards: a SIGHUP reload re-reads the files as the new user (they
//! must be readable by it or its group: `dtlsd certs --group`), and the capabilities root had
//! are gone. Transparent mode needs CAP_NET_ADMIN for every new upstream socket, so
//! `--user` with `upstream_source = "transparent"` is refused: run it under systemd with
//! `User=` and `AmbientCapabilities=CAP_NET_ADMIN` instead (docs/operations.md).

use anyhow::{Context, bail};
use nix::unistd::{
    Gid, Group, Uid, User, getegid, geteuid, getgid, getuid, setgid, setgroups, setuid,
};

/// The account the daemon runs as once its sockets and files are open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// The user's name.
    pub user: String,
    /// Its user id.
    pub uid: u32,
    /// The group's name (`group`, or the user's primary group).
    pub group: String,
    /// Its group id.
    pub gid: u32,
}

/// The account `user` and `group` name, looked up in the system's user and group databases.
///
/// # Errors
/// A name that is not there (the message says which database), or a lookup that failed.
pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
    let entry = User::from_name(user)
        .map_err(|e| format!("cannot look up user `{user}`: {e}"))?
        .ok_or_else(|| format!("no user `{user}` on this system"))?;
    let (group, gid) = match group {
        Some(name) => {
            let g = Group::from_name(name)
                .map_err(|e| format!("cannot look up group `{name}`: {e}"))?
                .ok_or_else(|| format!("no group `{name}` on this system"))?;
            (g.name, g.gid)
        }
        None => {
            // The user's primary group, by name where the group database has it.
            let name = Group::from_gid(entry.gid)
                .ok()
                .flatten()
                .map_or_else(|| entry.gid.to_string(), |g| g.name);
            (name, entry.gid)
        }
    };
    Ok(RunAs {
        user: entry.name,
        uid: entry.uid.as_raw(),
        group,
        gid: gid.as_raw(),
    })
}

/// Refuses `--user` when the process cannot change its ids: only root may.
///
/// # Errors
/// Not running as root.
pub fn check_root(run_as: &RunAs) -> anyhow::Result<()> {
    if !geteuid().is_root() {
        bail!(
            "--user {} needs dtlsd to start as root (it binds and reads as root, then drops to \
             the user); running as uid {}: start it as root, or leave out --user/user",
            run_as.user,
            geteuid()
        );
    }
    Ok(())
}

/// Gives up root for `run_as`: `setgroups([gid])`, `setgid`, `setuid`, then checks that
/// the real and effective ids are the new ones and that root cannot be had back.
///
/// # Errors
/// A call the kernel refused, or ids that did not all change.
pub fn drop_to(run_as: &RunAs) -> anyhow::Result<()> {
    let (uid, gid) = (Uid::from_raw(run_as.uid), Gid::from_raw(run_as.gid));
    setgroups(&[gid]).context("setgroups")?;
    setgid(gid).with_context(|| format!("setgid {}", run_as.gid))?;
    setuid(uid).with_context(|| format!("setuid {}", run_as.uid))?;
    if getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid {
        bail!("the user and group ids did not all change");
    }
    if !uid.is_root() && setuid(Uid::from_raw(0)).is_ok() {
        bail!("root could be regained after dropping privileges");
    }
    tracing::info!(
        user = %run_as.user,
        uid = run_as.uid,
        group = %run_as.group,
        gid = run_as.gid,
        "dropped privileges"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_to_uid_and_group_0_and_unknown_names_are_named() {
        let root = resolve("root", None).expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(
            resolve("no-such-user-dtlsd", None),
            Err("no user `no-such-user-dtlsd` on this system".to_owned())
        );
        assert_eq!(
            resolve("root", Some("no-such-group-dtlsd")),
            Err("no group `no-such-group-dtlsd` on this system".to_owned())
        );
    }
}
