//! The frames of an interactive exec (`ms exec -it`) after the HTTP upgrade: both sides send
//! `[kind: u8][length: u32 big-endian][payload]`.
//!
//! # Why frames, not raw bytes
//! Besides the terminal's bytes, the client sends window sizes and the end of its input, and the
//! server sends the command's exit status and errors: one small framing carries all of them
//! over the one upgraded connection, in order.

/// The `Upgrade:` protocol name of the route.
pub const PROTOCOL: &str = "microscaler-exec";

/// Longest payload accepted (a peer announcing more is refused, never buffered).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: bytes for the command's standard input.
    Stdin(Vec<u8>),
    /// Client → server: the terminal's size changed.
    Resize { rows: u16, cols: u16 },
    /// Client → server: no more input (the command's stdin is closed).
    StdinEnd,
    /// Server → client: output (with a terminal, everything is stdout).
    Stdout(Vec<u8>),
    /// Server → client: error output (only without a terminal).
    Stderr(Vec<u8>),
    /// Server → client: the command ended with this status (`None`: the engine did not say).
    Exit(Option<i64>),
    /// Server → client: the session failed (the engine went away, ...).
    Error(String),
}

const STDIN: u8 = 0;
const RESIZE: u8 = 1;
const STDIN_END: u8 = 2;
const STDOUT: u8 = 3;
const STDERR: u8 = 4;
const EXIT: u8 = 5;
const ERROR: u8 = 6;

impl Frame {
    /// The frame's bytes on the wire. A payload beyond [`MAX_PAYLOAD`] must be split by the
    /// caller ([`Frame::chunks`]).
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Stdin(b) => (STDIN, b.clone()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p)
            }
            Frame::StdinEnd => (STDIN_END, Vec::new()),
            Frame::Stdout(b) => (STDOUT, b.clone()),
            Frame::Stderr(b) => (STDERR, b.clone()),
            Frame::Exit(code) => (
                EXIT,
                code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default(),
            ),
            Frame::Error(m) => (ERROR, m.as_bytes().to_vec()),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// `data` as frames of `make`, each within [`MAX_PAYLOAD`].
    pub fn chunks(data: &[u8], make: fn(Vec<u8>) -> Frame) -> Vec<Frame> {
        data.chunks(MAX_PAYLOAD).map(|c| make(c.to_vec())).collect()
    }
}

/// Reassembles frames from bytes as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, if one has arrived.
    ///
    /// # Errors
    /// An unknown kind, a payload beyond [`MAX_PAYLOAD`], or a malformed fixed-size payload: the
    /// peer does not speak this protocol, and the session should end.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_PAYLOAD {
            return Err(format!(
                "frame of {len} bytes (at most {MAX_PAYLOAD} are allowed)"
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf.drain(..5 + len).skip(5).collect();
        let frame = match kind {
            STDIN => Frame::Stdin(payload),
            RESIZE => match payload[..] {
                [r0, r1, c0, c1] => Frame::Resize {
                    rows: u16::from_be_bytes([r0, r1]),
                    cols: u16::from_be_bytes([c0, c1]),
                },
                _ => return Err("a resize frame carries 4 bytes".into()),
            },
            STDIN_END => Frame::StdinEnd,
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => match <[u8; 8]>::try_from(&payload[..]) {
                Ok(b) => Frame::Exit(Some(i64::from_be_bytes(b))),
                Err(_) if payload.is_empty() => Frame::Exit(None),
                Err(_) => return Err("an exit frame carries 8 bytes or none".into()),
            },
            ERROR => Frame::Error(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(format!("unknown frame kind {other}")),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_survives_the_wire_even_split_byte_by_byte() {
        let frames = vec![
            Frame::Stdin(b"echo hi\r".to_vec()),
            Frame::Resize {
                rows: 40,
                cols: 132,
            },
            Frame::StdinEnd,
            Frame::Stdout(b"hi\r\n".to_vec()),
            Frame::Stderr(Vec::new()),
            Frame::Exit(Some(3)),
            Frame::Exit(Some(-1)),
            Frame::Exit(None),
            Frame::Error("engine gone".into()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in bytes {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn a_peer_that_does_not_speak_the_protocol_is_refused_not_buffered() {
        let mut d = Decoder::default();
        d.push(b"GET / HTTP/1.1\r\n");
        assert!(
            d.next_frame().is_err(),
            "a huge announced length is refused"
        );
        let mut d = Decoder::default();
        d.push(&[9, 0, 0, 0, 0]);
        assert!(d.next_frame().unwrap_err().contains("unknown frame kind 9"));
        let mut d = Decoder::default();
        d.push(&[RESIZE, 0, 0, 0, 1, 7]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn large_input_is_split_into_allowed_frames() {
        let data = vec![b'x'; MAX_PAYLOAD * 2 + 1];
        let chunks = Frame::chunks(&data, Frame::Stdin);
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|f| f.encode().len() <= 5 + MAX_PAYLOAD));
    }
}
