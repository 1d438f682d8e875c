//! A minimal MySQL protocol client over raw sockets: the handshake of a password-less
//! account, `COM_QUERY` with an OK/ERR answer or a one-column result set, `COM_PING`,
//! and waiting for the server to close the connection. Enough to open thousands of
//! idle sessions in about a second, to kill them in a tight loop, and to see the
//! moment each one is gone.

use std::io;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Conn {
    /// When the handshake finished: the session's idle time counts from about here.
    pub opened_at: Instant,
    stream: TcpStream,
}

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_MULTI_STATEMENTS: u32 = 0x1_0000;
const CLIENT_MULTI_RESULTS: u32 = 0x2_0000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

fn protocol(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn read_packet(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_packet(s: &mut TcpStream, seq: u8, body: &[u8]) -> io::Result<()> {
    let len = body.len() as u32;
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&len.to_le_bytes()[..3]);
    buf.push(seq);
    buf.extend_from_slice(body);
    s.write_all(&buf).await
}

fn server_error(p: &[u8]) -> io::Error {
    let code = u16::from_le_bytes([p[1], p.get(2).copied().unwrap_or(0)]);
    let msg = String::from_utf8_lossy(p.get(9..).unwrap_or_default());
    protocol(format!("server error {code}: {msg}"))
}

impl Conn {
    /// Logs in as `user` (no password) on 127.0.0.1:`port`.
    pub async fn open(port: u16, user: &str) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let greeting = read_packet(&mut stream).await?;
        if greeting.first() == Some(&0xff) {
            return Err(server_error(&greeting));
        }
        if greeting.first() != Some(&10) {
            return Err(protocol("not a protocol 10 greeting"));
        }
        let version_end = greeting[1..]
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| protocol("no server version"))?
            + 1;
        let at = version_end + 1;
        // The connection id: checked for, not kept (the bench lists ids itself).
        let _id = u32::from_le_bytes(
            greeting
                .get(at..at + 4)
                .ok_or_else(|| protocol("short greeting"))?
                .try_into()
                .expect("4 bytes"),
        );
        let caps = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_STATEMENTS
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH;
        let mut resp = Vec::with_capacity(64);
        resp.extend_from_slice(&caps.to_le_bytes());
        resp.extend_from_slice(&(16u32 << 20).to_le_bytes());
        resp.push(33); // utf8_general_ci
        resp.extend_from_slice(&[0u8; 23]);
        resp.extend_from_slice(user.as_bytes());
        resp.push(0);
        resp.push(0); // an empty auth response: no password
        resp.extend_from_slice(b"mysql_native_password\0");
        write_packet(&mut stream, 1, &resp).await?;
        let answer = read_packet(&mut stream).await?;
        match answer.first() {
            Some(0x00) => Ok(Conn {
                opened_at: Instant::now(),
                stream,
            }),
            Some(0xff) => Err(server_error(&answer)),
            _ => Err(protocol(format!("unexpected login answer {answer:02x?}"))),
        }
    }

    /// A statement answered by OK or ERR (`KILL`, `SET`, `CREATE USER`...).
    pub async fn execute(&mut self, sql: &str) -> io::Result<()> {
        let mut body = Vec::with_capacity(sql.len() + 1);
        body.push(0x03);
        body.extend_from_slice(sql.as_bytes());
        write_packet(&mut self.stream, 0, &body).await?;
        let answer = read_packet(&mut self.stream).await?;
        match answer.first() {
            Some(0x00) => Ok(()),
            Some(0xff) => Err(server_error(&answer)),
            _ => Err(protocol("a result set where OK was expected")),
        }
    }

    /// Several statements (`;`-separated) in one packet, each answered by OK or
    /// ERR: how many succeeded before the first error (the server stops there), and
    /// that error.
    pub async fn execute_many(&mut self, sql: &str) -> io::Result<(usize, Option<String>)> {
        let mut body = Vec::with_capacity(sql.len() + 1);
        body.push(0x03);
        body.extend_from_slice(sql.as_bytes());
        write_packet(&mut self.stream, 0, &body).await?;
        let mut ok = 0;
        loop {
            let answer = read_packet(&mut self.stream).await?;
            match answer.first() {
                Some(0x00) => {
                    ok += 1;
                    let mut at = 1;
                    for _ in 0..2 {
                        at += match answer.get(at) {
                            Some(0xfc) => 3,
                            Some(0xfd) => 4,
                            Some(0xfe) => 9,
                            _ => 1,
                        };
                    }
                    let status = u16::from_le_bytes([answer[at], answer[at + 1]]);
                    if status & SERVER_MORE_RESULTS_EXISTS == 0 {
                        return Ok((ok, None));
                    }
                }
                Some(0xff) => return Ok((ok, Some(server_error(&answer).to_string()))),
                _ => return Err(protocol("a result set where OK was expected")),
            }
        }
    }

    /// Sends a query and reads its result set's head, up to the first row:
    /// false when the server answered OK (no result set).
    async fn result_set(&mut self, sql: &str) -> io::Result<bool> {
        let mut body = Vec::with_capacity(sql.len() + 1);
        body.push(0x03);
        body.extend_from_slice(sql.as_bytes());
        write_packet(&mut self.stream, 0, &body).await?;
        let head = read_packet(&mut self.stream).await?;
        match head.first() {
            Some(0xff) => return Err(server_error(&head)),
            Some(0x00) => return Ok(false),
            _ => {}
        }
        let columns = head[0] as usize;
        for _ in 0..columns {
            read_packet(&mut self.stream).await?;
        }
        let eof = read_packet(&mut self.stream).await?;
        if eof.first() != Some(&0xfe) {
            return Err(protocol("no EOF after the column definitions"));
        }
        Ok(true)
    }

    /// A query's rows, counted (their values are not read).
    pub async fn query_rows(&mut self, sql: &str) -> io::Result<usize> {
        if !self.result_set(sql).await? {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            let row = read_packet(&mut self.stream).await?;
            match row.first() {
                Some(0xfe) if row.len() < 9 => return Ok(n),
                Some(0xff) => return Err(server_error(&row)),
                _ => n += 1,
            }
        }
    }

    /// A query whose first column is an integer: its values.
    pub async fn query_ints(&mut self, sql: &str) -> io::Result<Vec<u64>> {
        if !self.result_set(sql).await? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        loop {
            let row = read_packet(&mut self.stream).await?;
            match row.first() {
                Some(0xfe) if row.len() < 9 => return Ok(out),
                Some(0xff) => return Err(server_error(&row)),
                Some(&len) if len < 251 => {
                    let text = row
                        .get(1..1 + len as usize)
                        .ok_or_else(|| protocol("short row"))?;
                    let v = std::str::from_utf8(text)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| protocol("not an integer"))?;
                    out.push(v);
                }
                _ => return Err(protocol("unexpected row")),
            }
        }
    }

    /// Whether the session is still there.
    pub async fn ping(&mut self) -> bool {
        if write_packet(&mut self.stream, 0, &[0x0e]).await.is_err() {
            return false;
        }
        matches!(read_packet(&mut self.stream).await, Ok(p) if p.first() == Some(&0x00))
    }

    /// Waits until the server closes the connection (a kill): the moment it did.
    pub async fn closed(mut self) -> Instant {
        let mut buf = [0u8; 256];
        loop {
            match self.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {} // MariaDB may say why before it closes
            }
        }
    }
}
