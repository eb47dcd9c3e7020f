//! The routed body as one zstd frame (routed format 6; docs/live.md, "The routed format"):
//! stage 1 compresses each shard's rows here, in the native call that wrote them and without the
//! GIL, and the shard decompresses them here, in `take_routed` and without the GIL. (Format 5 left
//! the compression to the routed topic's producer: cramjam on the event loop, the GIL held —
//! 14% of a worker's CPU, benchmarks/README.md "Seventh pass".)

use std::cell::RefCell;

/// zstd's level for the routed rows: level 1 packs them about as well as the producer's level 3
/// did (binary rows repeat their keys), at a fraction of the time.
pub const LEVEL: i32 = 1;
/// A frame that says it holds more rows than this is refused (a routed body holds at most one
/// event past `MESSAGE_BYTES`, and an event is at most `--max-event-bytes`).
pub const MAX_PLAIN: u64 = 1 << 30;
const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Compresses routed bodies, keeping its context and output buffer between batches.
pub struct Packer {
    cctx: zstd::bulk::Compressor<'static>,
}

impl Packer {
    pub fn new() -> Packer {
        let mut cctx = zstd::bulk::Compressor::new(LEVEL).expect("a zstd context");
        let _ = cctx.include_contentsize(true); // the shard sizes its buffer from it
        let _ = cctx.include_checksum(false);
        Packer { cctx }
    }

    /// ``rows`` as one frame appended to ``out`` (nothing for no rows).
    pub fn pack(&mut self, rows: &[u8], out: &mut Vec<u8>) {
        if rows.is_empty() {
            return;
        }
        let start = out.len();
        let bound = zstd::zstd_safe::compress_bound(rows.len());
        out.resize(start + bound, 0);
        let n = self
            .cctx
            .compress_to_buffer(rows, &mut out[start..])
            .expect("zstd: the bound holds the frame");
        out.truncate(start + n);
    }
}

impl Default for Packer {
    fn default() -> Packer {
        Packer::new()
    }
}

thread_local! {
    static UNPACK: RefCell<(Option<zstd::bulk::Decompressor<'static>>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
}

/// Buffers past this are given back after use (a huge event passed through once).
const KEEP: usize = 8 << 20;

/// ``with_rows`` over the rows of a routed body (its frame decompressed into this thread's buffer;
/// an empty body has no rows). Err with one line when it is not one zstd frame.
pub fn unpacked<T>(
    body: &[u8],
    with_rows: impl FnOnce(&[u8]) -> Result<T, String>,
) -> Result<T, String> {
    if body.is_empty() {
        return with_rows(&[]);
    }
    if body.len() < 4 || body[..4] != MAGIC {
        return Err("a routed message's body is not a zstd frame (routed format 6)".into());
    }
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) if size <= MAX_PLAIN => size as usize,
        Ok(Some(_)) => return Err("a routed message's body holds more than 1 GiB of rows".into()),
        _ => return Err("a routed message's body is a zstd frame without its size".into()),
    };
    UNPACK.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (dctx, buf) = &mut *cell;
        if dctx.is_none() {
            *dctx = Some(zstd::bulk::Decompressor::new().map_err(|e| format!("zstd: {e}"))?);
        }
        let dctx = dctx.as_mut().expect("made above");
        buf.clear();
        buf.resize(size, 0);
        let n = dctx
            .decompress_to_buffer(body, &mut buf[..])
            .map_err(|e| format!("a routed message's body is a broken zstd frame ({e})"))?;
        if n != size {
            return Err("a routed message's body is a broken zstd frame (its size)".into());
        }
        let result = with_rows(&buf[..n]);
        if buf.capacity() > KEEP {
            *buf = Vec::new();
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_body_unpacks_to_its_rows() {
        let rows: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut packer = Packer::new();
        let mut out = b"head".to_vec();
        packer.pack(&rows, &mut out);
        assert!(out.len() < rows.len() / 4);
        let got = unpacked(&out[4..], |r| Ok(r.to_vec())).unwrap();
        assert_eq!(got, rows);
        assert_eq!(unpacked(&[], |r| Ok(r.len())).unwrap(), 0);
        let cut = &out[4..out.len() - 1];
        assert!(unpacked(cut, |r| Ok(r.len()))
            .unwrap_err()
            .contains("broken"));
        assert!(unpacked(b"rows", |r| Ok(r.len()))
            .unwrap_err()
            .contains("not a zstd frame"));
    }
}
