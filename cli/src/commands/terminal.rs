//! `ckpt attach PID`: the caller's terminal joined to the terminal ckptd holds for a restored
//! process. Raw mode while attached; the window size goes with it (and with each change); the
//! detach keys, ctrl-p ctrl-q as Docker's, leave the process running, its output kept in
//! ckptd's log meanwhile.

use std::io::{IsTerminal, Read};

use ckptd_api::terminal::{frame, resize, FRAME_DATA};
use ckptd_api::{Client, ClientError};
use ratatui::crossterm::terminal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CTRL_P: u8 = 0x10;
const CTRL_Q: u8 = 0x11;

/// Restores the caller's terminal however `attach` ends.
struct RawMode(bool);

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.0 {
            let _ = terminal::disable_raw_mode();
        }
    }
}

pub async fn attach(client: &Client, pid: i32) -> Result<(), ClientError> {
    let io = client.attach_terminal(pid).await?;
    let (mut rd, mut wr) = tokio::io::split(io);
    let tty = std::io::stdin().is_terminal();
    let raw = RawMode(tty && terminal::enable_raw_mode().is_ok());
    let io_err = |e: std::io::Error| ClientError::Io(format!("the attached terminal failed: {e}"));
    if tty {
        if let Ok((cols, rows)) = terminal::size() {
            wr.write_all(&resize(rows, cols)).await.map_err(io_err)?;
        }
        eprint!("ckpt: attached to pid {pid}; detach with ctrl-p ctrl-q\r\n");
    }
    // stdin is read on a thread of its own (its reads block).
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(io_err)?;
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 16 * 1024];
    // A ctrl-p is held back until the next key says whether it detaches.
    let mut held = false;
    let mut input_open = true;
    let detached = loop {
        tokio::select! {
            n = rd.read(&mut buf) => match n {
                Ok(0) | Err(_) => break false,
                Ok(n) => {
                    out.write_all(&buf[..n]).await.map_err(io_err)?;
                    out.flush().await.map_err(io_err)?;
                }
            },
            typed = rx.recv(), if input_open => match typed {
                None => input_open = false,
                Some(bytes) => {
                    let mut send = Vec::with_capacity(bytes.len() + 1);
                    let mut detach = false;
                    for b in bytes {
                        match (held, b) {
                            (true, CTRL_Q) => { detach = true; break; }
                            (true, _) => { held = b == CTRL_P; send.push(CTRL_P); if !held { send.push(b); } }
                            (false, CTRL_P) => held = true,
                            (false, _) => send.push(b),
                        }
                    }
                    if !send.is_empty() {
                        wr.write_all(&frame(FRAME_DATA, &send)).await.map_err(io_err)?;
                    }
                    if detach {
                        break true;
                    }
                }
            },
            _ = winch.recv() => {
                if let Ok((cols, rows)) = terminal::size() {
                    wr.write_all(&resize(rows, cols)).await.map_err(io_err)?;
                }
            }
        }
    };
    drop(raw);
    if detached {
        eprintln!("\nckpt: detached from pid {pid}; it runs on (ckpt attach {pid} to come back)");
    } else {
        eprintln!("\nckpt: the terminal of pid {pid} closed (the process ended)");
    }
    Ok(())
}
