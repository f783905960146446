//! Zero-configuration discovery on the local network: mDNS / DNS-SD
//! (`_chorus._udp.local.`). A serving node announces itself with its peer
//! id in a TXT record; a player browses for a moment and dials what it
//! finds. The id is only a claim: the dial checks it against the peer's
//! certificate like any other, and what a stranger on the LAN can make us
//! do is bounded ([`MAX_LAN_PEERS`] dials per browse, one browse window).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chorus_protocol::PeerId;
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type.
pub const SERVICE: &str = "_chorus._udp.local.";
/// How long a browse listens before it is over: nodes on a LAN answer a
/// query within tens of milliseconds; a second covers a slow Wi-Fi.
pub const BROWSE_WINDOW: Duration = Duration::from_secs(1);
/// The most LAN peers one browse returns (each is dialled).
pub const MAX_LAN_PEERS: usize = 8;

/// Errors of LAN discovery (it is best effort: callers log and go on).
#[derive(Debug, thiserror::Error)]
#[error("LAN discovery: {0}")]
pub struct LanError(String);

fn err(e: impl std::fmt::Display) -> LanError {
    LanError(e.to_string())
}

/// A node's announcement; withdrawn when dropped.
pub struct Announcer {
    daemon: ServiceDaemon,
    fullname: String,
    events: mdns_sd::Receiver<mdns_sd::DaemonEvent>,
}

impl Announcer {
    /// Announces the node `id` serving on UDP `port` of every address of
    /// this host's interfaces.
    pub fn start(
        id: PeerId,
        port: u16,
        swarm: Option<&crate::identity::SwarmKey>,
    ) -> Result<Self, LanError> {
        let daemon = ServiceDaemon::new().map_err(err)?;
        let service = service_type(swarm);
        let hex = id.to_string();
        // An instance name must be unique on the link: the id's start is.
        let instance = format!("chorus-{}", &hex[..16.min(hex.len())]);
        let host = format!("{instance}.local.");
        let info =
            ServiceInfo::new(&service, &instance, &host, "", port, &[("id", hex.as_str())][..])
                .map_err(err)?
                .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        let events = daemon.monitor().map_err(err)?;
        daemon.register(info).map_err(err)?;
        Ok(Self { daemon, fullname, events })
    }

    /// Blocks until the service answers queries on a network (not only on
    /// loopback): mDNS first probes the name (about a second), announces
    /// it twice a second apart, and does not multicast the same records
    /// again within a second of sending them (RFC 6762 §6.2), so queries in
    /// the two seconds after the first announcement may go unanswered.
    /// False after `limit` (a host with no network but loopback).
    pub fn wait_announced(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(mdns_sd::DaemonEvent::Announce(name, on))
                    if name == self.fullname && !on.ends_with(":lo") =>
                {
                    std::thread::sleep(Duration::from_millis(2200).min(left));
                    return true;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        // Goodbye packets, then the daemon's thread ends.
        if let Ok(rx) = self.daemon.unregister(&self.fullname) {
            let _ = rx.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// A node found on the LAN: the id it claims and where it said it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanPeer {
    /// The peer id from its TXT record (checked when dialled).
    pub id: PeerId,
    /// Its addresses (IPv4 first).
    pub addrs: Vec<SocketAddr>,
}

/// The service type: [`SERVICE`], or in a private swarm one derived from
/// its key (outsiders neither find it nor can tell whose it is).
pub fn service_type(swarm: Option<&crate::identity::SwarmKey>) -> String {
    match swarm {
        None => SERVICE.to_owned(),
        Some(k) => {
            let tag: String =
                k.derive(b"chorus/mdns/v1")[..4].iter().map(|b| format!("{b:02x}")).collect();
            // A service name is at most 15 characters: "chorus-" and 8 more.
            format!("_chorus-{tag}._udp.local.")
        }
    }
}

/// An address a QUIC dial can use: not unspecified, and not an IPv6
/// link-local one (it would need the interface's scope).
fn usable(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => !v4.is_unspecified(),
        std::net::IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
    }
}

/// Browses for `window` (blocking: run it on a blocking thread), calling
/// `found` for each new node other than `me`, at most [`MAX_LAN_PEERS`]
/// times. Returns early when `found` returns false.
pub fn browse(
    me: PeerId,
    swarm: Option<&crate::identity::SwarmKey>,
    window: Duration,
    found: &mut dyn FnMut(LanPeer) -> bool,
) -> Result<(), LanError> {
    let daemon = ServiceDaemon::new().map_err(err)?;
    let service = service_type(swarm);
    let events = daemon.browse(&service).map_err(err)?;
    let deadline = Instant::now() + window;
    let mut seen: Vec<PeerId> = Vec::new();
    while seen.len() < MAX_LAN_PEERS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Ok(event) = events.recv_timeout(left) else { break };
        let ServiceEvent::ServiceResolved(info) = event else { continue };
        let Some(id) = info.get_property_val_str("id").and_then(|s| PeerId::from_str(s).ok())
        else {
            continue;
        };
        if id == me || seen.contains(&id) {
            continue;
        }
        let mut addrs: Vec<SocketAddr> = info
            .get_addresses()
            .iter()
            .map(|a| SocketAddr::new(a.to_ip_addr(), info.get_port()))
            .filter(|a| usable(a.ip()) && a.port() != 0)
            .collect();
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.truncate(chorus_protocol::limits::MAX_ADDRS);
        if addrs.is_empty() {
            continue;
        }
        seen.push(id);
        if !found(LanPeer { id, addrs }) {
            break;
        }
    }
    let _ = daemon.stop_browse(&service);
    let _ = daemon.shutdown();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_swarm_has_a_service_of_its_own() {
        let a = crate::identity::SwarmKey::from_hex(&"ab".repeat(32)).unwrap();
        let b = crate::identity::SwarmKey::from_hex(&"cd".repeat(32)).unwrap();
        assert_eq!(service_type(None), SERVICE);
        let (sa, sb) = (service_type(Some(&a)), service_type(Some(&b)));
        assert_ne!(sa, sb);
        assert_ne!(sa, SERVICE);
        // DNS-SD service names are at most 15 characters.
        let name = sa.trim_start_matches('_').split('.').next().unwrap();
        assert!(name.len() <= 15, "{name}");
    }
}
