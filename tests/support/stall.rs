//! A TCP proxy in front of a server that forwards everything until the client sends
//! a given text, then holds the connection open and forwards nothing more: a server
//! that accepts a connection but stalls a query.

#![allow(dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct StallingProxy {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StallingProxy {
    pub async fn start(upstream: u16, marker: &str) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let marker = marker.as_bytes().to_vec();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let marker = marker.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let down = tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = sr.read(&mut buf).await {
                            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        if buf[..n]
                            .windows(marker.len())
                            .any(|w| w == marker.as_slice())
                        {
                            // Stall: keep both ends open, forward nothing.
                            std::future::pending::<()>().await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    down.abort();
                });
            }
        });
        StallingProxy { port, task }
    }
}
