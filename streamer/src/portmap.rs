//! Mapping the node's UDP port on the home router, so peers outside reach
//! it directly, with no punching: UPnP IGD, through `igd-next`.
//!
//! Why `igd-next`: UPnP IGD is what home routers speak most widely (and
//! what Debian's `miniupnpd` serves, in the test); the crate is small (a
//! blocking HTTP client, no async stack of its own), maintained, and does
//! only this. NAT-PMP and PCP (the Apple and IETF protocols) are not
//! spoken yet.
//!
//! The calls block (an SSDP search, then SOAP over HTTP to the router):
//! callers run them off the async runtime. A mapping is leased for
//! [`LEASE`] and renewed at half that; it is removed when the node stops.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};

/// How long the router keeps a mapping unless renewed.
pub const LEASE: Duration = Duration::from_secs(3600);
/// How long the search for a router may take.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);
/// What the router's mapping table shows for ours.
const DESCRIPTION: &str = "chorus";

/// Errors of port mapping.
#[derive(Debug, thiserror::Error)]
#[error("port mapping: {0}")]
pub struct PortMapError(String);

/// A port mapped on the router.
#[derive(Debug)]
pub struct PortMapping {
    gateway: igd_next::Gateway,
    local: SocketAddr,
    external: SocketAddr,
}

impl PortMapping {
    /// Finds the router (UPnP IGD) and maps UDP `port` on it to this host's
    /// address on the router's network, asking for the same port outside
    /// (else any). Blocks for up to a few seconds.
    pub fn map(port: u16) -> Result<Self, PortMapError> {
        let e = |what: &str, err: &dyn std::fmt::Display| PortMapError(format!("{what}: {err}"));
        let mut options = SearchOptions::default();
        options.timeout = Some(SEARCH_TIMEOUT);
        options.single_search_timeout = Some(SEARCH_TIMEOUT);
        let gateway =
            igd_next::search_gateway(options).map_err(|x| e("no UPnP router found", &x))?;
        // Our address on the router's network: the one a socket aimed at
        // the router would send from (connecting a UDP socket sends nothing).
        let probe = UdpSocket::bind(("0.0.0.0", 0)).map_err(|x| e("probe socket", &x))?;
        probe.connect(gateway.addr).map_err(|x| e("route to the router", &x))?;
        let ip = probe.local_addr().map_err(|x| e("local address", &x))?.ip();
        let local = SocketAddr::new(ip, port);
        let external_ip: IpAddr =
            gateway.get_external_ip().map_err(|x| e("the router's public address", &x))?;
        let lease = LEASE.as_secs() as u32;
        let external_port =
            match gateway.add_port(PortMappingProtocol::UDP, port, local, lease, DESCRIPTION) {
                Ok(()) => port,
                Err(_) => gateway
                    .add_any_port(PortMappingProtocol::UDP, local, lease, DESCRIPTION)
                    .map_err(|x| e("the router refused a mapping", &x))?,
            };
        let external = SocketAddr::new(external_ip, external_port);
        Ok(Self { gateway, local, external })
    }

    /// Where peers outside reach this node.
    pub fn external(&self) -> SocketAddr {
        self.external
    }

    /// The router's control address.
    pub fn router(&self) -> SocketAddr {
        self.gateway.addr
    }

    /// Renews the lease (blocks).
    pub fn renew(&self) -> Result<(), PortMapError> {
        self.gateway
            .add_port(
                PortMappingProtocol::UDP,
                self.external.port(),
                self.local,
                LEASE.as_secs() as u32,
                DESCRIPTION,
            )
            .map_err(|x| PortMapError(format!("renewing: {x}")))
    }

    /// Removes the mapping (blocks).
    pub fn remove(&self) -> Result<(), PortMapError> {
        self.gateway
            .remove_port(PortMappingProtocol::UDP, self.external.port())
            .map_err(|x| PortMapError(format!("removing: {x}")))
    }
}
