//! Mapping the node's UDP port on the home router, so peers outside reach
//! it directly, with no punching: PCP and NAT-PMP (through `crab_nat`),
//! then UPnP IGD (through `igd-next`).
//!
//! Why these two crates: together they speak the three protocols home
//! routers offer (PCP, its predecessor NAT-PMP, and UPnP IGD, the most
//! widespread, which Debian's `miniupnpd` serves in the tests); each is
//! small, maintained and does only this (`crab_nat` is async on tokio,
//! `igd-next`'s blocking client runs off the runtime). iroh's `portmapper`
//! does all three but brings iroh's networking stack with it.
//!
//! A mapping is leased for [`LEASE`] and renewed at half that; it is
//! removed when the node stops.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::num::NonZeroU16;
use std::time::Duration;

use igd_next::{PortMappingProtocol, SearchOptions};

/// How long the router keeps a mapping unless renewed.
pub const LEASE: Duration = Duration::from_secs(3600);
/// How long the search for a UPnP router may take.
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the PCP / NAT-PMP exchange with the gateway may take.
pub const PMP_TIMEOUT: Duration = Duration::from_secs(1);
/// What the router's mapping table shows for ours.
const DESCRIPTION: &str = "chorus";

/// Errors of port mapping.
#[derive(Debug, thiserror::Error)]
#[error("port mapping: {0}")]
pub struct PortMapError(String);

/// The protocol a mapping was made with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapProtocol {
    /// UPnP IGD.
    Upnp,
    /// The Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
}

impl std::fmt::Display for MapProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Upnp => "UPnP",
            Self::Pcp => "PCP",
            Self::NatPmp => "NAT-PMP",
        })
    }
}

enum Kind {
    Upnp { gateway: igd_next::Gateway, local: SocketAddr },
    Pmp(tokio::sync::Mutex<crab_nat::PortMapping>),
}

/// A port mapped on the router.
pub struct PortMapping {
    kind: Kind,
    external: SocketAddr,
    router: IpAddr,
    protocol: MapProtocol,
}

impl std::fmt::Debug for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMapping")
            .field("external", &self.external)
            .field("router", &self.router)
            .field("protocol", &self.protocol)
            .finish()
    }
}

fn err(what: &str, e: &dyn std::fmt::Debug) -> PortMapError {
    PortMapError(format!("{what}: {e:?}"))
}

/// The default route's gateway (Linux: from `/proc/net/route`).
fn default_gateway() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let g = u32::from_str_radix(f[2], 16).ok()?;
        (g != 0).then(|| Ipv4Addr::from(g.to_le_bytes()))
    })
}

/// Our address on the way to `to` (connecting a UDP socket sends nothing).
fn local_ip_towards(to: SocketAddr) -> Option<IpAddr> {
    let probe = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    probe.connect(to).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

impl PortMapping {
    /// Maps UDP `port` on the router, asking for the same port outside:
    /// by PCP or NAT-PMP with the default gateway, else by UPnP IGD with
    /// the router an SSDP search finds. Takes up to a few seconds.
    pub async fn map(port: u16) -> Result<Self, PortMapError> {
        let pmp = match Self::map_pmp(port).await {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        match tokio::task::spawn_blocking(move || Self::map_upnp(port)).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(upnp)) => Err(PortMapError(format!("{}; {}", pmp.0, upnp.0))),
            Err(e) => Err(err("UPnP", &e)),
        }
    }

    async fn map_pmp(port: u16) -> Result<Self, PortMapError> {
        let gateway = default_gateway().ok_or_else(|| PortMapError("no default gateway".into()))?;
        let client = local_ip_towards(SocketAddr::new(gateway.into(), crab_nat::GATEWAY_PORT))
            .ok_or_else(|| PortMapError("no route to the gateway".into()))?;
        let internal = NonZeroU16::new(port).ok_or_else(|| PortMapError("port 0".into()))?;
        let timeouts = crab_nat::TimeoutConfig {
            initial_timeout: Duration::from_millis(250),
            max_retries: 1,
            max_retry_timeout: Some(Duration::from_millis(500)),
        };
        let options = crab_nat::PortMappingOptions {
            external_port: Some(internal),
            lifetime_seconds: Some(LEASE.as_secs() as u32),
            timeout_config: Some(timeouts),
        };
        let mapped = tokio::time::timeout(
            PMP_TIMEOUT * 3,
            crab_nat::PortMapping::new(
                gateway.into(),
                client,
                crab_nat::InternetProtocol::Udp,
                internal,
                options,
            ),
        )
        .await
        .map_err(|_| PortMapError("no PCP or NAT-PMP answer from the gateway".into()))?
        .map_err(|e| err("PCP / NAT-PMP", &e))?;
        let (ip, protocol) = match mapped.mapping_type() {
            crab_nat::PortMappingType::Pcp { external_ip, .. } => (external_ip, MapProtocol::Pcp),
            crab_nat::PortMappingType::NatPmp => {
                let ip = crab_nat::natpmp::external_address(gateway.into(), Some(timeouts))
                    .await
                    .map_err(|e| err("the gateway's public address", &e))?;
                (IpAddr::V4(ip), MapProtocol::NatPmp)
            }
        };
        let external = SocketAddr::new(ip, mapped.external_port().get());
        Ok(Self {
            kind: Kind::Pmp(tokio::sync::Mutex::new(mapped)),
            external,
            router: gateway.into(),
            protocol,
        })
    }

    /// Blocks for up to a few seconds.
    fn map_upnp(port: u16) -> Result<Self, PortMapError> {
        let mut options = SearchOptions::default();
        options.timeout = Some(SEARCH_TIMEOUT);
        options.single_search_timeout = Some(SEARCH_TIMEOUT);
        let gateway = igd_next::search_gateway(options).map_err(|x| err("no UPnP router", &x))?;
        let ip = local_ip_towards(gateway.addr)
            .ok_or_else(|| PortMapError("no route to the UPnP router".into()))?;
        let local = SocketAddr::new(ip, port);
        let external_ip: IpAddr =
            gateway.get_external_ip().map_err(|x| err("the router's public address", &x))?;
        let lease = LEASE.as_secs() as u32;
        let external_port =
            match gateway.add_port(PortMappingProtocol::UDP, port, local, lease, DESCRIPTION) {
                Ok(()) => port,
                Err(_) => gateway
                    .add_any_port(PortMappingProtocol::UDP, local, lease, DESCRIPTION)
                    .map_err(|x| err("the router refused a mapping", &x))?,
            };
        let router = gateway.addr.ip();
        Ok(Self {
            kind: Kind::Upnp { gateway, local },
            external: SocketAddr::new(external_ip, external_port),
            router,
            protocol: MapProtocol::Upnp,
        })
    }

    /// Where peers outside reach this node.
    pub fn external(&self) -> SocketAddr {
        self.external
    }

    /// The router's address.
    pub fn router(&self) -> IpAddr {
        self.router
    }

    /// The protocol the mapping was made with.
    pub fn protocol(&self) -> MapProtocol {
        self.protocol
    }

    /// Renews the lease.
    pub async fn renew(&self) -> Result<(), PortMapError> {
        match &self.kind {
            Kind::Upnp { gateway, local } => {
                let (g, l, port) = (gateway.clone(), *local, self.external.port());
                tokio::task::spawn_blocking(move || {
                    g.add_port(
                        PortMappingProtocol::UDP,
                        port,
                        l,
                        LEASE.as_secs() as u32,
                        DESCRIPTION,
                    )
                })
                .await
                .map_err(|e| err("renewing", &e))?
                .map_err(|e| err("renewing", &e))
            }
            Kind::Pmp(m) => m.lock().await.renew().await.map_err(|e| err("renewing", &e)),
        }
    }

    /// Removes the mapping.
    pub async fn remove(self) -> Result<(), PortMapError> {
        match self.kind {
            Kind::Upnp { gateway, .. } => {
                let port = self.external.port();
                tokio::task::spawn_blocking(move || {
                    gateway.remove_port(PortMappingProtocol::UDP, port)
                })
                .await
                .map_err(|e| err("removing", &e))?
                .map_err(|e| err("removing", &e))
            }
            Kind::Pmp(m) => m.into_inner().try_drop().await.map_err(|(e, _)| err("removing", &e)),
        }
    }
}
