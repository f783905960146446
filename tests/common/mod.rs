//! Shared helpers for the end-to-end tests: the sample set, a library in a
//! temp dir, and a seed node on 127.0.0.1 port 0.
#![allow(dead_code, missing_docs)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus_streamer::identity::Identity;
use chorus_streamer::library::{self, Library, ScanConfig, ScanReport};
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::tls::TransportLimits;
use chorus_streamer::transport::Transport;

/// The built sample set; tests need it (scripts/test builds it first).
pub fn samples() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/out");
    assert!(
        dir.join("SHA256SUMS").exists(),
        "the sample set is missing: run `bash samples/build.sh` (scripts/test does it for you)"
    );
    dir
}

pub fn sample(name: &str) -> PathBuf {
    samples().join(name)
}

/// A temp library holding copies of the named samples.
pub fn library_dir(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for n in names {
        std::fs::copy(sample(n), dir.path().join(n)).expect("copy sample");
    }
    dir
}

/// Scans `dir` with the index in `data_dir`, saving it, like `chorus seed`.
pub fn scan(dir: &Path, data_dir: &Path) -> (Library, ScanReport, Vec<String>) {
    let previous = library::load_index(data_dir);
    let warnings = std::sync::Mutex::new(Vec::new());
    let (lib, report) = library::scan(
        &[dir.to_path_buf()],
        previous,
        &ScanConfig::default(),
        &|_| {},
        &|w: &str| warnings.lock().expect("lock").push(w.to_owned()),
    );
    library::save_index(data_dir, &lib).expect("save index");
    (lib, report, warnings.into_inner().expect("lock"))
}

pub struct Seed {
    pub node: Node,
    pub addr: SocketAddr,
    pub id: chorus_protocol::PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl Seed {
    pub fn start(library: Library) -> Self {
        let identity = Arc::new(Identity::ephemeral().expect("identity"));
        let id = identity.peer_id();
        let node = Node::bind(identity, ([127, 0, 0, 1], 0).into(), library, NodeLimits::default())
            .expect("bind seed");
        let addr = node.transport().local_addr().expect("addr");
        let n = node.clone();
        let task = tokio::spawn(async move { n.serve().await });
        Self { node, addr, id, task }
    }

    pub async fn stop(self) {
        self.node.shutdown().await;
        self.task.abort();
    }
}

/// A dial-only endpoint on 127.0.0.1.
pub fn client() -> Transport {
    let identity = Arc::new(Identity::ephemeral().expect("identity"));
    Transport::bind(identity, ([127, 0, 0, 1], 0).into(), None, &TransportLimits::default())
        .expect("bind client")
}
