//! The attach protocol of a terminal ckptd holds (`POST /v1/terminals/{pid}/attach`, upgraded
//! to [`PROTOCOL`]): the client sends frames, `[kind u8][len u16 BE][payload]`, of the bytes
//! typed ([`FRAME_DATA`]) and of its window size ([`FRAME_RESIZE`]: rows, cols, u16 BE each);
//! it receives the terminal's output as it comes, raw.

/// The protocol name of an attached terminal connection.
pub const PROTOCOL: &str = "ckptd-tty/1";
pub const FRAME_DATA: u8 = 0;
pub const FRAME_RESIZE: u8 = 1;

/// One frame (a payload longer than 65535 bytes is cut there; send it in pieces).
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(u16::MAX as usize)];
    let mut f = Vec::with_capacity(3 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A window-size frame.
pub fn resize(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    frame(FRAME_RESIZE, &p)
}
