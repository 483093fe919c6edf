//! HAProxy's runtime API, for the services that run it (the database's
//! endpoints, the ALB's nodes): one command per connection to its admin
//! socket, and `show stat` read as the servers' states.

use std::net::SocketAddr;
use std::time::Duration;

/// One command to the runtime API at `addr` (a published admin port).
pub async fn admin(addr: SocketAddr, command: &str) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("{command}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let out = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| "HAProxy admin timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let trimmed = out.trim();
    if trimmed.is_empty() || !trimmed.contains("No such") && !trimmed.contains("Unknown") && !trimmed.contains("denied")
    {
        Ok(out)
    } else {
        Err(format!("HAProxy refused `{command}`: {trimmed}"))
    }
}

/// A server of a backend as `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStat {
    pub backend: String,
    pub server: String,
    /// `UP`, `DOWN`, `MAINT`, `no check`, or a transition such as
    /// `UP 1/2` (one failed check of the two that take it down).
    pub status: String,
}

impl ServerStat {
    /// Healthy as a load balancer routes: up, or up and one check down.
    pub fn healthy(&self) -> bool {
        self.status.starts_with("UP") || self.status == "no check"
    }
}

/// The server rows of `show stat`'s CSV (frontends and backend totals
/// left out), by its header's column names.
pub fn servers(csv: &str) -> Vec<ServerStat> {
    let mut lines = csv.lines();
    let Some(header) = lines.next().and_then(|h| h.strip_prefix("# ")) else { return vec![] };
    let cols: Vec<&str> = header.split(',').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (at("pxname"), at("svname"), at("status")) else { return vec![] };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let server = *f.get(sv)?;
            if server == "FRONTEND" || server == "BACKEND" {
                return None;
            }
            Some(ServerStat { backend: f.get(px)?.to_string(), server: server.into(), status: f.get(st)?.to_string() })
        })
        .collect()
}

/// A server's administrative state as `show servers state` reports it
/// (its `srv_admin_state` bits): what an operator set, not what the checks
/// found. A drained server whose target is gone shows `DOWN` in `show
/// stat`; here it still shows drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAdmin {
    pub server: String,
    /// Forced maintenance (bit 0x01) or forced drain (0x08).
    pub maint: bool,
    pub drain: bool,
}

/// The servers of `backend` in `show servers state`'s output.
pub fn server_admin(text: &str) -> Vec<ServerAdmin> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.find(|l| l.starts_with("# ")) else { return vec![] };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(' ').collect();
    let at = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(sv), Some(ad)) = (at("srv_name"), at("srv_admin_state")) else { return vec![] };
    lines
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let admin: u32 = f.get(ad)?.parse().ok()?;
            Some(ServerAdmin { server: f.get(sv)?.to_string(), maint: admin & 0x01 != 0, drain: admin & 0x08 != 0 })
        })
        .collect()
}

/// The administrative states of `backend`'s servers now.
pub async fn server_admin_states(addr: SocketAddr, backend: &str) -> Result<Vec<ServerAdmin>, String> {
    let command = format!("show servers state {backend}");
    Ok(server_admin(answered(&command, &admin(addr, &command).await?)?))
}

/// Every server's state, as the runtime API at `addr` reports it now.
pub async fn server_stats(addr: SocketAddr) -> Result<Vec<ServerStat>, String> {
    Ok(servers(answered("show stat", &admin(addr, "show stat").await?)?))
}

/// A listing's answer, only if it has its header. Docker's port proxy
/// accepts a connection for a container that is going away and closes it
/// unanswered: read as "no servers", that would have the controller
/// register every pod again on a node that is dying.
fn answered<'a>(command: &str, text: &'a str) -> Result<&'a str, String> {
    if text.lines().any(|l| l.starts_with("# ")) {
        Ok(text)
    } else {
        Err(format!("HAProxy gave no answer to `{command}` (the node is going away or not up yet)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_stat_reads_as_server_states_by_column_name() {
        let csv = "# pxname,svname,qcur,status,weight\n\
                   https,FRONTEND,,OPEN,\n\
                   targets,api-a,0,UP,1\n\
                   targets,api-b,0,DOWN 1/5,1\n\
                   targets,api-c,0,UP 1/2,1\n\
                   targets,BACKEND,0,UP,2\n";
        let s = servers(csv);
        assert_eq!(s.len(), 3);
        assert_eq!(s[1], ServerStat { backend: "targets".into(), server: "api-b".into(), status: "DOWN 1/5".into() });
        assert_eq!(s.iter().filter(|s| s.healthy()).count(), 2, "going down is still in service");
        assert!(servers("garbage").is_empty());
        assert!(answered("show stat", csv).is_ok());
        assert!(answered("show stat", "").is_err(), "a connection closed unanswered is not an empty listing");
    }

    #[test]
    fn a_drained_server_is_drained_whatever_its_checks_say() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                    5 targets 1 pod-10-0-1-225 10.0.1.225 0 8 1\n\
                    5 targets 2 pod-10-0-2-225 10.0.2.225 2 0 1\n\
                    5 targets 3 pod-10-0-3-1 10.0.3.1 0 1 1\n";
        let s = server_admin(text);
        assert_eq!(s.len(), 3);
        assert!(s[0].drain && !s[0].maint, "{s:?}");
        assert!(!s[1].drain && !s[1].maint);
        assert!(s[2].maint);
    }
}
