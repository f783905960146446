//! A node learns the address its peers see it at: each peer's hello reply
//! carries it, and the node believes it once two peers at different IPs
//! agree (here 127.0.0.2 and 127.0.0.3, both seeing the listener's
//! 127.0.0.1 socket: no NAT, so the port is stable).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;

use chorus_streamer::identity::Identity;
use chorus_streamer::node::{Node, NodeLimits};
use chorus_streamer::transport::Mapping;
use common::*;

fn seed_at(ip: [u8; 4]) -> Node {
    let identity = Arc::new(Identity::ephemeral().unwrap());
    let node =
        Node::bind(identity, (ip, 0).into(), Default::default(), NodeLimits::default()).unwrap();
    let n = node.clone();
    tokio::spawn(async move { n.serve().await });
    node
}

#[tokio::test]
async fn two_peers_agreeing_tell_a_node_its_address_and_one_is_not_believed() {
    let (a, b) = (seed_at([127, 0, 0, 2]), seed_at([127, 0, 0, 3]));
    let me = client();
    let mine = me.local_addr().unwrap();
    let pa = me.connect(a.transport().local_addr().unwrap(), None).await.unwrap();
    assert_eq!(pa.hello().observed, Some(mine), "the reply says where it sees us");
    assert_eq!(me.observed(), None, "one peer's word is not enough");
    me.connect(b.transport().local_addr().unwrap(), None).await.unwrap();
    let seen = me.observed().expect("two peers agree");
    assert_eq!(seen.addr, mine);
    assert_eq!(seen.agreeing, 2);
    assert_eq!(seen.mapping, Mapping::Stable);
}

#[test]
fn ports_that_differ_per_peer_mean_a_symmetric_nat() {
    use chorus_streamer::transport::consensus;
    let r = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let seen = consensus(&[
        (r("198.51.100.1:1"), r("203.0.113.7:40001")),
        (r("198.51.100.2:1"), r("203.0.113.7:40002")),
        (r("198.51.100.3:1"), r("203.0.113.7:40002")),
    ])
    .unwrap();
    assert_eq!(seen.mapping, Mapping::PerDestination);
    assert_eq!(seen.addr, r("203.0.113.7:40002"));
    // Two peers naming two different IPs: no consensus.
    assert_eq!(
        consensus(&[
            (r("198.51.100.1:1"), r("203.0.113.7:1")),
            (r("198.51.100.2:1"), r("203.0.113.8:1"))
        ]),
        None
    );
}
