//! Node identity: a key pair made once and kept in the data dir, and the
//! self-signed certificate that carries it in every TLS handshake.
//!
//! The [`PeerId`] is the blake3 hash of the public key's DER
//! `SubjectPublicKeyInfo`, so it survives certificate regeneration and is
//! checked against the certificate a peer presents.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chorus_protocol::PeerId;
use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

/// Fills `buf` from the system's randomness (rustls's ring provider). If
/// that ever fails, with bytes unique to this call (blake3 of the clock, a
/// counter and a per-process random hasher state): enough for what uses
/// this (nonces, ticket ids, relay tokens, all short-lived and unique per
/// key), not for keys ([`SwarmKey::generate`] fails instead).
pub(crate) fn fill_unique(buf: &mut [u8]) {
    if rustls::crypto::ring::default_provider().secure_random.fill(buf).is_ok() {
        return;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut h = blake3::Hasher::new();
    h.update(&n.to_le_bytes());
    h.update(&crate::discovery::new_query_id().to_le_bytes());
    h.finalize_xof().fill(buf);
}

/// The file in the data dir that holds the node's private key (PKCS#8 DER).
pub const KEY_FILE: &str = "identity.key";

/// A private swarm's shared secret (`chorus swarm new`). A node with one
/// accepts and dials only nodes that prove they hold it: each member's
/// certificate names it by a MAC of the swarm key over the member's own
/// public key ([`SwarmKey::member_name`]). The TLS handshake proves the
/// member holds that public key's private key, so the proof is bound to
/// the session: copying another member's certificate does not help, and
/// nobody without the key can make one for their own key.
#[derive(Clone, PartialEq, Eq)]
pub struct SwarmKey([u8; 32]);

impl std::fmt::Debug for SwarmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SwarmKey(..)")
    }
}

impl SwarmKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut k)
            .map_err(|_| Error::Identity("no randomness for a swarm key".into()))?;
        Ok(Self(k))
    }

    /// The key's text form (64 hex digits).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the text form.
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad =
            || Error::Identity("a swarm key is 64 hex digits (from `chorus swarm new`)".into());
        if s.len() != 64 || !s.is_ascii() {
            return Err(bad());
        }
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(k))
    }

    /// Derives a 32-byte value for `purpose` (DHT keys, the mDNS service
    /// name): outsiders can neither compute nor recognise it.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, purpose).as_bytes()
    }

    /// The name a member's certificate carries: a MAC over its public key.
    pub fn member_name(&self, spki_der: &[u8]) -> String {
        let mut input = b"chorus swarm member v1\0".to_vec();
        input.extend_from_slice(spki_der);
        let mac = blake3::keyed_hash(&self.0, &input);
        let hex: String = mac.as_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("m{hex}.swarm.chorus")
    }
}

/// A node's key pair and certificate.
pub struct Identity {
    key_der: Vec<u8>,
    cert: CertificateDer<'static>,
    peer_id: PeerId,
    swarm: Option<SwarmKey>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh identity that is not stored anywhere (tests, one-shot clients).
    pub fn ephemeral() -> Result<Self> {
        let key = KeyPair::generate().map_err(|e| Error::Identity(e.to_string()))?;
        Self::from_key(key)
    }

    /// Loads the identity from `data_dir`, making and storing one the first
    /// time. The key file is written with mode 0600 via a temp file and a
    /// rename, so a crash never leaves half a key.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(KEY_FILE);
        match fs::read(&path) {
            Ok(der) => {
                let key = KeyPair::try_from(der.as_slice()).map_err(|e| {
                    Error::Identity(format!(
                        "{} is not a valid key ({e}); move it away to make a new identity",
                        path.display()
                    ))
                })?;
                Self::from_key(key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(|e| Error::Identity(e.to_string()))?;
                fs::create_dir_all(data_dir)
                    .map_err(|e| Error::io("creating data dir", data_dir, e))?;
                write_private(&path, &key.serialize_der())?;
                Self::from_key(key)
            }
            Err(e) => Err(Error::io("reading node key", path, e)),
        }
    }

    fn from_key(key: KeyPair) -> Result<Self> {
        Self::certified(key, None)
    }

    fn certified(key: KeyPair, swarm: Option<SwarmKey>) -> Result<Self> {
        let spki = key.subject_public_key_info();
        let peer_id = PeerId::from_public_key_der(&spki);
        let mut names = vec!["chorus".to_owned()];
        if let Some(s) = &swarm {
            names.push(s.member_name(&spki));
        }
        let params = CertificateParams::new(names).map_err(|e| Error::Identity(e.to_string()))?;
        let cert = params.self_signed(&key).map_err(|e| Error::Identity(e.to_string()))?;
        Ok(Self { key_der: key.serialize_der(), cert: cert.der().clone(), peer_id, swarm })
    }

    /// The same node as a member of the private swarm `swarm`: its
    /// certificate proves it, and it accepts only members.
    pub fn in_swarm(self, swarm: SwarmKey) -> Result<Self> {
        let key = KeyPair::try_from(self.key_der.as_slice())
            .map_err(|e| Error::Identity(e.to_string()))?;
        Self::certified(key, Some(swarm))
    }

    /// The private swarm this node belongs to, if any.
    pub fn swarm(&self) -> Option<&SwarmKey> {
        self.swarm.as_ref()
    }

    /// This node's id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The certificate chain to present (one self-signed certificate).
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.clone()]
    }

    /// A 32-byte secret for `context` (a fixed string naming its use),
    /// derived from the node's key: the same across restarts, unknown to
    /// anyone without the key.
    pub fn derive_secret(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.key_der)
    }

    /// The private key.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(|e| Error::io("writing node key", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("writing node key", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("writing node key", path, e))
}

/// The peer id a certificate carries, or an error if it does not parse.
pub fn peer_id_of_cert(cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    Ok(PeerId::from_public_key_der(parsed.subject_public_key_info().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_and_matches_its_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(peer_id_of_cert(&a.cert_chain()[0]).unwrap(), a.peer_id());
        assert_ne!(Identity::ephemeral().unwrap().peer_id(), a.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join(KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key readable by others");
        }
    }

    #[test]
    fn a_corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a valid key"), "{err}");
    }
}
