//! TLS and QUIC configuration: TLS 1.3 only, the `chorus/1` ALPN, mutual
//! authentication with self-signed certificates.
//!
//! Certificates are not chained to any authority: a peer *is* its key. The
//! verifiers below check that the certificate parses and that the handshake
//! is signed by its key; which key was expected is checked after the
//! handshake against the [`PeerId`](chorus_protocol::PeerId) that was dialled
//! ([`crate::transport::Transport::connect`]), so a mismatch is a typed error.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DistinguishedName, SignatureScheme};

use crate::error::{Error, Result};
use crate::identity::Identity;

/// Connection limits and timeouts.
#[derive(Clone, Debug)]
pub struct TransportLimits {
    /// Streams a peer may have open at once on one connection. 64 allows a
    /// listener's full deadline window of 16 KiB requests on a 100 ms link
    /// at 10 Mbit/s (~8 in flight) many times over, while bounding what one
    /// peer can make us hold.
    pub max_streams_per_connection: u32,
    /// A connection with no traffic for this long is closed. 30 s: long
    /// enough to survive a paused player's keep-alives (sent every 10 s).
    pub idle_timeout: Duration,
    /// How often an idle connection is kept alive.
    pub keep_alive: Duration,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_streams_per_connection: 64,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(10),
        }
    }
}

/// The congestion window a connection starts with, in bytes: 160 KiB holds
/// a start response's manifest and [`crate::client::START_BUDGET`] of
/// chunks (and an MP4's index at the file's end, mostly), so the decoder
/// starts on the first flight. quinn paces a window over the RTT
/// (1.25 × window ÷ RTT): at 96 KiB an 80 ms path's first flight went at
/// 12 Mbit/s, below the link's rate. (RFC 9002 suggests ~14 KB; large
/// content servers start at 10-64 packets and more.)
pub const INITIAL_WINDOW: u64 = 160 * 1024;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Bytes a peer may have in flight to us on one stream of a connection it
/// opened (a request), and on the whole connection: requests are at most
/// [`chorus_protocol::limits::MAX_REQUEST_FRAME_LEN`], so a stream window
/// of that size never stalls an honest peer, and 1 MiB across its streams
/// bounds what one connection can make a node buffer.
pub const SERVING_STREAM_WINDOW: u32 = chorus_protocol::limits::MAX_REQUEST_FRAME_LEN;
/// See [`SERVING_STREAM_WINDOW`].
pub const SERVING_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes in flight to us on a connection we dialled (replies: chunk data):
/// 8 MiB fills a 100 Mbit/s link at 600 ms RTT, and bounds what a peer we
/// chose can make us buffer. Per stream, quinn's default (1.25 MB, a
/// 100 Mbit/s link at 100 ms) stands.
pub const DIALLED_CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// Which side of a connection a config is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Connections peers open to us: they send requests.
    Serving,
    /// Connections we open: peers send replies.
    Dialling,
}

fn transport(limits: &TransportLimits, role: Role) -> Result<Arc<quinn::TransportConfig>> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|_| Error::Identity("idle timeout out of range".into()))?;
    // RFC 9002's 333 ms guess makes the first lost handshake packet cost a
    // full second (3 × the guess) before it is sent again; listeners start
    // with several handshakes at once, so one loss among them would hold
    // the first note back by that second. The guess also paces what a
    // node sends before it has measured the path: a start answered with
    // the handshake (crate::resume) goes out at 1.25 × window ÷ guess, at
    // 100 ms half a 20 Mbit/s link's rate. 50 ms (a continent's round
    // trip); a longer real one only costs a spurious small resend.
    t.initial_rtt(Duration::from_millis(50));
    // The first flight of a start response carries the manifest (12-30 KB
    // for a 4-minute track) and the head of the track: with quinn's default
    // window (~12 KB) it took 2-3 round trips. Sends are paced over the
    // RTT, so the larger burst does not hit a bottleneck queue at once.
    let mut cc = quinn::congestion::CubicConfig::default();
    cc.initial_window(INITIAL_WINDOW);
    t.congestion_controller_factory(Arc::new(cc));
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(limits.keep_alive))
        .max_concurrent_bidi_streams(limits.max_streams_per_connection.into());
    match role {
        Role::Serving => {
            // Every request and reply travels on a bidirectional stream: a
            // unidirectional one would only be bytes nobody reads.
            t.max_concurrent_uni_streams(0u32.into())
                .stream_receive_window(SERVING_STREAM_WINDOW.into())
                .receive_window(SERVING_CONNECTION_WINDOW.into());
        }
        Role::Dialling => {
            // One: the start response a peer sends with its handshake, to
            // a request sealed in the server name (crate::resume).
            t.max_concurrent_uni_streams(1u32.into())
                .receive_window(DIALLED_CONNECTION_WINDOW.into());
        }
    }
    Ok(Arc::new(t))
}

/// The QUIC server configuration of a node.
pub fn server_config(identity: &Identity, limits: &TransportLimits) -> Result<quinn::ServerConfig> {
    let provider = provider();
    let verifier = Arc::new(PeerCertVerifier::new(&provider, identity.swarm().cloned()));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain(), identity.private_key())?;
    tls.alpn_protocols = vec![chorus_protocol::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| Error::Identity(format!("QUIC server TLS: {e}")))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(limits, Role::Serving)?);
    // Address-validation tokens (NEW_TOKEN) under a key derived from the
    // node's, so a peer's token still counts after a restart: with one, a
    // start response fills the first flight (crate::resume).
    config.token_key(crate::resume::token_key(identity));
    Ok(config)
}

/// The QUIC client configuration of a node; `tokens` keeps the
/// address-validation tokens peers give it.
pub fn client_config(
    identity: &Identity,
    limits: &TransportLimits,
    tokens: Arc<dyn quinn::TokenStore>,
) -> Result<quinn::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PeerCertVerifier::new(&provider, identity.swarm().cloned()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())?;
    tls.alpn_protocols = vec![chorus_protocol::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| Error::Identity(format!("QUIC client TLS: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(limits, Role::Dialling)?).token_store(tokens);
    Ok(config)
}

/// Accepts any well-formed certificate whose key signs the handshake; in
/// a private swarm, only one that names its key as a member's.
#[derive(Debug)]
struct PeerCertVerifier {
    algs: WebPkiSupportedAlgorithms,
    swarm: Option<crate::identity::SwarmKey>,
}

impl PeerCertVerifier {
    fn new(provider: &CryptoProvider, swarm: Option<crate::identity::SwarmKey>) -> Self {
        Self { algs: provider.signature_verification_algorithms, swarm }
    }

    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let parsed = ParsedCertificate::try_from(cert)?;
        let Some(swarm) = &self.swarm else { return Ok(()) };
        let name = swarm.member_name(parsed.subject_public_key_info().as_ref());
        let name = ServerName::try_from(name)
            .map_err(|_| rustls::Error::General("swarm member name".into()))?;
        rustls::client::verify_server_name(&parsed, &name).map_err(|_| {
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )
        })
    }
}

impl ServerCertVerifier for PeerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for PeerCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
