//! Reads the few CRIU image files ckptd needs: `stats-dump` (CRIU's timing statistics) and
//! `pstree.img` (every pid of the dumped tree). A CRIU image is two 32-bit magics followed by
//! entries, each a little-endian u32 length and a protobuf message. Only varint fields are read,
//! so a tiny decoder does; unknown fields are skipped, which keeps it forward compatible.

use std::path::Path;

use ckptd_api::DumpStats;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid CRIU image: {why}")]
    Corrupt { path: String, why: &'static str },
}

fn read_entries(path: &Path) -> Result<Vec<Vec<u8>>, ImageError> {
    let data = std::fs::read(path).map_err(|source| ImageError::Read {
        path: path.display().to_string(),
        source,
    })?;
    entries(&data).map_err(|why| ImageError::Corrupt {
        path: path.display().to_string(),
        why,
    })
}

fn entries(data: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    if data.len() < 8 {
        return Err("shorter than its magic");
    }
    let mut rest = &data[8..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("truncated entry size");
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err("truncated entry");
        }
        out.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    Ok(out)
}

/// A protobuf field: number and either a varint or a length-delimited payload.
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

fn fields(mut buf: &[u8]) -> Result<Vec<Field<'_>>, &'static str> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let num = (key >> 3) as u32;
        match key & 7 {
            0 => out.push(Field::Varint(num, varint(&mut buf)?)),
            1 => buf = buf.get(8..).ok_or("truncated fixed64")?,
            2 => {
                let len = varint(&mut buf)? as usize;
                let payload = buf.get(..len).ok_or("truncated bytes")?;
                out.push(Field::Bytes(num, payload));
                buf = &buf[len..];
            }
            5 => buf = buf.get(4..).ok_or("truncated fixed32")?,
            _ => return Err("unsupported wire type"),
        }
    }
    Ok(out)
}

/// CRIU's dump statistics (StatsEntry.dump, a DumpStatsEntry).
pub fn read_dump_stats(images: &Path) -> Result<DumpStats, ImageError> {
    let path = images.join("stats-dump");
    let corrupt = |why| ImageError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    let entries = read_entries(&path)?;
    let entry = entries.first().ok_or_else(|| corrupt("no entry"))?;
    let mut stats = DumpStats::default();
    for f in fields(entry).map_err(corrupt)? {
        if let Field::Bytes(1, dump) = f {
            for g in fields(dump).map_err(corrupt)? {
                if let Field::Varint(n, v) = g {
                    match n {
                        1 => stats.freezing_time_us = v,
                        2 => stats.frozen_time_us = v,
                        3 => stats.memdump_time_us = v,
                        4 => stats.memwrite_time_us = v,
                        7 => stats.pages_written = v,
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// Every pid and thread id of the dumped tree, root first (PstreeEntry: pid=1, threads=5).
pub fn read_tree_pids(images: &Path) -> Result<Vec<i32>, ImageError> {
    let path = images.join("pstree.img");
    let corrupt = |why| ImageError::Corrupt {
        path: path.display().to_string(),
        why,
    };
    let mut pids = Vec::new();
    for entry in read_entries(&path)? {
        for f in fields(&entry).map_err(corrupt)? {
            match f {
                Field::Varint(1, v) | Field::Varint(5, v) => {
                    let pid = v as i32;
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
                // packed repeated threads
                Field::Bytes(5, mut packed) => {
                    while !packed.is_empty() {
                        let pid = varint(&mut packed).map_err(corrupt)? as i32;
                        if !pids.contains(&pid) {
                            pids.push(pid);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if pids.is_empty() {
        return Err(corrupt("no process in the tree"));
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Bytes of a real stats-dump and pstree.img written by CRIU 4.2.1 on this project's machine.
    const STATS: &[u8] = &[
        0x40, 0x59, 0x10, 0x55, 0x06, 0x33, 0x09, 0x57, 0x22, 0x00, 0x00, 0x00, 0x0a, 0x20, 0x08,
        0xbc, 0x36, 0x10, 0xd7, 0x62, 0x18, 0xe6, 0x0a, 0x20, 0x88, 0x03, 0x28, 0x6a, 0x30, 0x00,
        0x38, 0x3e, 0x40, 0x00, 0x48, 0x00, 0x50, 0x0c, 0x58, 0x0c, 0x60, 0x00, 0x68, 0x00, 0x70,
        0x00,
    ];
    const PSTREE: &[u8] = &[
        0x19, 0x43, 0x56, 0x54, 0x30, 0x30, 0x27, 0x50, 0x0e, 0x00, 0x00, 0x00, 0x08, 0xe6, 0x33,
        0x10, 0x00, 0x18, 0xe6, 0x33, 0x20, 0xe6, 0x33, 0x28, 0xe6, 0x33, 0x0f, 0x00, 0x00, 0x00,
        0x08, 0xa7, 0x34, 0x10, 0xe6, 0x33, 0x18, 0xe6, 0x33, 0x20, 0xe6, 0x33, 0x28, 0xa7, 0x34,
    ];

    #[test]
    fn reads_real_stats_dump() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("stats-dump"), STATS).unwrap();
        let s = read_dump_stats(d.path()).unwrap();
        assert_eq!(s.freezing_time_us, 6972);
        assert_eq!(s.frozen_time_us, 12631);
        assert_eq!(s.memdump_time_us, 1382);
        assert_eq!(s.memwrite_time_us, 392);
        assert_eq!(s.pages_written, 62);
    }

    #[test]
    fn reads_real_pstree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pstree.img"), PSTREE).unwrap();
        assert_eq!(read_tree_pids(d.path()).unwrap(), vec![6630, 6695]);
    }

    #[test]
    fn truncated_image_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        for n in 0..STATS.len() {
            std::fs::write(d.path().join("stats-dump"), &STATS[..n]).unwrap();
            let _ = read_dump_stats(d.path());
        }
        std::fs::write(d.path().join("stats-dump"), &STATS[..20]).unwrap();
        assert!(read_dump_stats(d.path()).is_err());
    }
}
