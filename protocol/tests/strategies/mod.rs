//! proptest strategies for protocol values.
#![allow(clippy::single_range_in_vec_init)]
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use chorus_protocol::message::*;
use chorus_protocol::*;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

pub fn hash32() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

pub fn track_id() -> impl Strategy<Value = TrackId> {
    hash32().prop_map(TrackId::from_bytes)
}

pub fn peer_id() -> impl Strategy<Value = PeerId> {
    hash32().prop_map(PeerId::from_bytes)
}

pub fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!(".{{0,{max}}}")).expect("valid regex")
}

pub fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    (any::<IpAddr>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(ip, port))
}

pub fn finite_f32() -> impl Strategy<Value = f32> {
    (-100.0f32..100.0).prop_map(|v| v)
}

pub fn tags() -> impl Strategy<Value = Tags> {
    (
        (option::of(text(40)), option::of(text(40)), option::of(text(40)), option::of(text(40))),
        (option::of(any::<u32>()), option::of(any::<u32>()), option::of(any::<u32>())),
        (
            option::of(finite_f32()),
            option::of(finite_f32()),
            option::of(finite_f32()),
            option::of(finite_f32()),
        ),
    )
        .prop_map(
            |((title, artist, album, album_artist), (tn, dn, year), (tg, tp, ag, ap))| Tags {
                title,
                artist,
                album,
                album_artist,
                track_number: tn,
                disc_number: dn,
                year,
                track_gain_db: tg,
                track_peak: tp,
                album_gain_db: ag,
                album_peak: ap,
            },
        )
}

pub fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (peer_id(), vec(socket_addr(), 0..4)).prop_map(|(id, addrs)| PeerInfo { id, addrs })
}

pub fn catalog_entry() -> impl Strategy<Value = CatalogEntry> {
    (
        track_id(),
        text(30),
        tags(),
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u16>(),
    )
        .prop_map(
            |(track, file_name, tags, codec, duration_ms, byte_len, sample_rate, channels)| {
                CatalogEntry {
                    track,
                    file_name,
                    tags,
                    codec: Codec::from_code(codec),
                    duration_ms,
                    byte_len,
                    sample_rate,
                    channels,
                }
            },
        )
}

pub fn path_report() -> impl Strategy<Value = PathReport> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| PathReport { sent: a.max(b), lost: a.min(b) })
}

pub fn have_runs() -> impl Strategy<Value = Vec<ChunkRun>> {
    vec((0u32..1000, 1u32..1000), 0..20).prop_map(|gaps| {
        let mut next = 0u32;
        gaps.into_iter()
            .map(|(gap, len)| {
                let start = next + gap;
                next = start + len + 1;
                ChunkRun { start, len }
            })
            .collect()
    })
}

pub fn error_code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode::from_code)
}

pub fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u8>(),
            peer_id(),
            vec(socket_addr(), 0..5),
            text(20),
            proptest::option::of(socket_addr()),
            proptest::option::of(socket_addr()),
            proptest::option::of((any::<[u8; 16]>(), any::<[u8; 32]>()))
        )
            .prop_map(|(a, b, peer_id, listen_addrs, agent, observed, mapped, ticket)| {
                Message::Hello(Hello {
                    min_version: a.min(b),
                    max_version: a.max(b),
                    peer_id,
                    listen_addrs,
                    agent,
                    observed,
                    mapped,
                    ticket: ticket.map(|(id, key)| Ticket { id, key }),
                })
            }),
        (text(50), any::<u32>())
            .prop_map(|(query, limit)| Message::SearchRequest(SearchRequest { query, limit })),
        vec(catalog_entry(), 0..5)
            .prop_map(|results| Message::SearchResponse(SearchResponse { results })),
        track_id().prop_map(|track| Message::ManifestRequest(ManifestRequest { track })),
        (track_id(), vec(any::<u8>(), 0..300), any::<bool>()).prop_map(|(track, m, origin)| {
            Message::ManifestResponse(ManifestResponse { track, manifest: Bytes::from(m), origin })
        }),
        (track_id(), any::<u32>(), 1u32..=4096, any::<u32>()).prop_map(
            |(track, first, count, deadline_ms)| Message::ChunkRequest(ChunkRequest {
                track,
                first: ChunkIndex(first),
                count,
                deadline_ms,
            })
        ),
        (track_id(), any::<u32>(), path_report(), 0usize..4, vec(any::<u8>(), 0..2000)).prop_map(
            |(track, i, path, groups, data)| Message::ChunkData(ChunkData {
                track,
                index: ChunkIndex(i),
                path,
                groups: Bytes::from(vec![0x5a; 32 * groups]),
                data: Bytes::from(data),
            })
        ),
        (track_id(), have_runs()).prop_map(|(track, runs)| Message::Have(Have { track, runs })),
        (track_id(), any::<u32>(), 1u32..=4096).prop_map(|(track, first, count)| {
            Message::Cancel(Cancel { track, first: ChunkIndex(first), count })
        }),
        vec(peer_info(), 0..5).prop_map(|peers| Message::PeerExchange(PeerExchange { peers })),
        (any::<u64>(), track_id(), 0u8..=2).prop_map(|(query_id, track, hops_left)| {
            Message::WhoHas(WhoHas { query_id, track, hops_left })
        }),
        (any::<u64>(), track_id(), vec(peer_info(), 0..5)).prop_map(|(query_id, track, peers)| {
            Message::WhoHasReply(WhoHasReply { query_id, track, peers })
        }),
        (
            prop_oneof![track_id().prop_map(Want::Track), text(40).prop_map(Want::Query)],
            any::<u32>(),
            0..=chorus_protocol::limits::MAX_START_BUDGET,
        )
            .prop_map(|(want, at_ms, budget)| Message::StartRequest(StartRequest {
                want,
                at_ms,
                budget
            })),
        (peer_id(), any::<bool>())
            .prop_map(|(target, relay)| Message::Connect(Connect { target, relay })),
        (peer_id(), socket_addr(), proptest::option::of(any::<[u8; 32]>()))
            .prop_map(|(peer, addr, relay)| Message::Rendezvous(Rendezvous { peer, addr, relay })),
        (track_id(), any::<u32>(), 1usize..8).prop_map(|(track, first_page, n)| {
            let data = Bytes::from((0..32 * n).map(|i| i as u8).collect::<Vec<u8>>());
            Message::Hashes(Hashes { track, first_page, data })
        }),
        (track_id(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(track, i, from, deadline_ms)| Message::TailRequest(TailRequest {
                track,
                index: ChunkIndex(i),
                from,
                deadline_ms,
            })
        ),
        (error_code(), text(60))
            .prop_map(|(code, message)| Message::Error(ErrorReply { code, message })),
    ]
}

/// A valid manifest over random data, with a random chunk size, header
/// ranges and time index.
pub fn manifest() -> impl Strategy<Value = (Manifest, Bytes)> {
    (
        vec(any::<u8>(), 1..20_000),
        0u32..3,
        any::<u8>(),
        any::<u8>(),
        1u32..200_000,
        1u16..8,
        any::<u64>(),
        tags(),
        vec((1u64..5000, 0u64..1_000_000), 0..30),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(data, cs, codec, container, rate, channels, frames, tags, steps, header, gapped)| {
                let data = Bytes::from(data);
                let size = ChunkSize::new(1024 << cs).expect("valid size");
                // Cut where the audio begins, as a library does; or, when
                // the bytes before it fit in two chunks, on each side of
                // a gap that ends there (a FLAC's padding).
                let (len, audio) = (data.len() as u64, time_index_first(&steps, data.len() as u64));
                let chunk = u64::from(size.get());
                let lead = (audio / 2).clamp(1, chunk);
                let layout = if gapped && audio > lead && audio - lead <= chunk && audio < len {
                    ChunkLayout::with_gap(len, size, lead as u32, (audio - lead) as u32)
                } else {
                    ChunkLayout::aligned(len, size, audio)
                }
                .expect("valid layout");
                let (hashes, _) = chunk::chunk_bytes(&data, &layout).expect("chunked");
                let mut time_index = Vec::new();
                let (mut off, mut t) = (0u64, 0u64);
                for (d_off, d_t) in steps {
                    off += d_off;
                    t += d_t;
                    if off >= data.len() as u64 {
                        break;
                    }
                    time_index.push(TimePoint { byte_offset: off, time_us: t });
                }
                let header_ranges =
                    if header { vec![0..(data.len() as u64).min(100)] } else { Vec::new() };
                let media = MediaInfo {
                    codec: Codec::from_code(codec),
                    container: Container::from_code(container),
                    sample_rate: rate,
                    channels,
                    frames,
                    header_ranges,
                    time_index,
                    tags,
                };
                (Manifest::new(media, layout, hashes).expect("valid manifest"), data)
            },
        )
}

/// The first time index point's offset `steps` make (0 if none).
fn time_index_first(steps: &[(u64, u64)], len: u64) -> u64 {
    steps.first().map_or(0, |&(off, _)| off).min(len)
}
