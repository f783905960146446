//! Encoding primitives shared by the manifest and the messages.
//!
//! Integers are unsigned LEB128 varints and must be minimal (canonical);
//! hashes are 32 raw bytes; strings and byte strings are a varint length then
//! the bytes. Every length is checked against a limit *before* anything is
//! allocated, so a hostile length costs nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{BufMut, Bytes};

use crate::limits;
use crate::manifest::Tags;

use crate::error::{ProtocolError, Result};

/// Appends values to a buffer. Infallible: the encoder is only ever handed
/// values that already passed validation.
pub(crate) trait Put: BufMut {
    fn put_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.put_u8((v as u8) | 0x80);
            v >>= 7;
        }
        self.put_u8(v as u8);
    }

    fn put_str(&mut self, s: &str) {
        self.put_varint(s.len() as u64);
        self.put_slice(s.as_bytes());
    }

    fn put_opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.put_u8(0),
            Some(s) => {
                self.put_u8(1);
                self.put_str(s);
            }
        }
    }

    fn put_opt_varint(&mut self, v: Option<u64>) {
        match v {
            None => self.put_u8(0),
            Some(v) => {
                self.put_u8(1);
                self.put_varint(v);
            }
        }
    }

    fn put_opt_f32(&mut self, v: Option<f32>) {
        match v {
            None => self.put_u8(0),
            Some(v) => {
                self.put_u8(1);
                self.put_u32_le(v.to_bits());
            }
        }
    }

    fn put_socket_addr(&mut self, addr: &SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.put_u8(4);
                self.put_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.put_u8(6);
                self.put_slice(&ip.octets());
            }
        }
        self.put_u16(addr.port());
    }
}

impl<B: BufMut + ?Sized> Put for B {}

/// The encoded length of a varint.
pub(crate) fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// The encoded length of a length-prefixed string.
pub(crate) fn str_len(s: &str) -> usize {
    varint_len(s.len() as u64) + s.len()
}

/// Reads values from a `Bytes` without copying byte strings out of it.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish_ref(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(ProtocolError::Truncated);
        }
        let buf: &'a Bytes = self.buf;
        let s = &buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16_be(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32_le(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn array16(&mut self) -> Result<[u8; 16]> {
        let b = self.take(16)?;
        let mut out = [0u8; 16];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn array32(&mut self) -> Result<[u8; 32]> {
        let b = self.take(32)?;
        let mut out = [0u8; 32];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A minimal LEB128 varint of at most 64 bits.
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 0x01 {
                return Err(ProtocolError::Overflow(what));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    return Err(ProtocolError::NonCanonical(what));
                }
                return Ok(v);
            }
        }
        Err(ProtocolError::Overflow(what))
    }

    pub(crate) fn varint_u32(&mut self, what: &'static str) -> Result<u32> {
        u32::try_from(self.varint(what)?).map_err(|_| ProtocolError::Overflow(what))
    }

    /// A count or length, checked against `max` before use.
    pub(crate) fn len(&mut self, what: &'static str, max: usize) -> Result<usize> {
        let n = self.varint(what)?;
        if n > max as u64 {
            return Err(ProtocolError::TooMany { what, count: n, max: max as u64 });
        }
        // n <= max, which is a usize.
        Ok(n as usize)
    }

    pub(crate) fn str(&mut self, what: &'static str, max: usize) -> Result<String> {
        let n = self.len(what, max)?;
        let b = self.take(n)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| ProtocolError::InvalidUtf8(what))
    }

    /// A byte string as a zero-copy slice of the input.
    pub(crate) fn bytes(&mut self, what: &'static str, max: usize) -> Result<Bytes> {
        let n = self.len(what, max)?;
        self.slice(n)
    }

    /// The next `n` bytes as a zero-copy slice of the input.
    pub(crate) fn slice(&mut self, n: usize) -> Result<Bytes> {
        if self.remaining() < n {
            return Err(ProtocolError::Truncated);
        }
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn flag(&mut self, what: &'static str) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(ProtocolError::Invalid(what)),
        }
    }

    pub(crate) fn opt_str(&mut self, what: &'static str, max: usize) -> Result<Option<String>> {
        if self.flag(what)? { self.str(what, max).map(Some) } else { Ok(None) }
    }

    pub(crate) fn opt_varint_u32(&mut self, what: &'static str) -> Result<Option<u32>> {
        if self.flag(what)? { self.varint_u32(what).map(Some) } else { Ok(None) }
    }

    pub(crate) fn opt_f32(&mut self, what: &'static str) -> Result<Option<f32>> {
        if !self.flag(what)? {
            return Ok(None);
        }
        let v = f32::from_bits(self.u32_le()?);
        if v.is_finite() { Ok(Some(v)) } else { Err(ProtocolError::Invalid(what)) }
    }

    pub(crate) fn socket_addr(&mut self) -> Result<SocketAddr> {
        let ip = match self.u8()? {
            4 => {
                let b = self.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b = self.take(16)?;
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(ProtocolError::Invalid("address family")),
        };
        Ok(SocketAddr::new(ip, self.u16_be()?))
    }
}

/// The encoded length of a socket address.
pub(crate) fn socket_addr_len(addr: &SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => 1 + 16 + 2,
    }
}

/// Tags, in the one order both the manifest and catalog entries use.
fn opt_str_len(s: &Option<String>) -> usize {
    1 + s.as_deref().map_or(0, str_len)
}

fn opt_varint_len(v: Option<u32>) -> usize {
    1 + v.map_or(0, |v| varint_len(u64::from(v)))
}

pub(crate) fn tags_len(t: &Tags) -> usize {
    [&t.title, &t.artist, &t.album, &t.album_artist].into_iter().map(opt_str_len).sum::<usize>()
        + [t.track_number, t.disc_number, t.year].into_iter().map(opt_varint_len).sum::<usize>()
        + [t.track_gain_db, t.track_peak, t.album_gain_db, t.album_peak]
            .into_iter()
            .map(|g| 1 + g.map_or(0, |_| 4))
            .sum::<usize>()
}

pub(crate) fn put_tags(buf: &mut impl BufMut, t: &Tags) {
    buf.put_opt_str(t.title.as_deref());
    buf.put_opt_str(t.artist.as_deref());
    buf.put_opt_str(t.album.as_deref());
    buf.put_opt_str(t.album_artist.as_deref());
    buf.put_opt_varint(t.track_number.map(u64::from));
    buf.put_opt_varint(t.disc_number.map(u64::from));
    buf.put_opt_varint(t.year.map(u64::from));
    buf.put_opt_f32(t.track_gain_db);
    buf.put_opt_f32(t.track_peak);
    buf.put_opt_f32(t.album_gain_db);
    buf.put_opt_f32(t.album_peak);
}

pub(crate) fn read_tags(r: &mut Reader<'_>) -> Result<Tags> {
    let max = limits::MAX_TAG_LEN;
    Ok(Tags {
        title: r.opt_str("title", max)?,
        artist: r.opt_str("artist", max)?,
        album: r.opt_str("album", max)?,
        album_artist: r.opt_str("album artist", max)?,
        track_number: r.opt_varint_u32("track number")?,
        disc_number: r.opt_varint_u32("disc number")?,
        year: r.opt_varint_u32("year")?,
        track_gain_db: r.opt_f32("track gain")?,
        track_peak: r.opt_f32("track peak")?,
        album_gain_db: r.opt_f32("album gain")?,
        album_peak: r.opt_f32("album peak")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_varint(bytes: &[u8]) -> Result<u64> {
        let b = Bytes::copy_from_slice(bytes);
        let mut r = Reader::new(&b);
        let v = r.varint("v")?;
        r.finish_ref()?;
        Ok(v)
    }

    #[test]
    fn varints_round_trip_and_have_the_predicted_length() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            buf.put_varint(v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            assert_eq!(read_varint(&buf), Ok(v));
        }
    }

    #[test]
    fn non_minimal_and_overlong_varints_are_rejected() {
        assert_eq!(read_varint(&[0x80, 0x00]), Err(ProtocolError::NonCanonical("v")));
        assert_eq!(read_varint(&[0xff; 10]), Err(ProtocolError::Overflow("v")));
        assert_eq!(read_varint(&[0xff; 11]), Err(ProtocolError::Overflow("v")));
        assert_eq!(read_varint(&[0x80]), Err(ProtocolError::Truncated));
    }

    #[test]
    fn a_hostile_length_is_refused_before_allocation() {
        let mut buf = Vec::new();
        buf.put_varint(u64::MAX);
        let b = Bytes::from(buf);
        let mut r = Reader::new(&b);
        assert!(matches!(r.str("s", 10), Err(ProtocolError::TooMany { .. })));
    }
}
