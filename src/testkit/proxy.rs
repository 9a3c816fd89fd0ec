//! A loopback TCP proxy for fault tests: it passes traffic to one upstream
//! (Postgres, the S3/SQS emulator) until told to refuse connections (each is
//! closed at once, as a stopped server's would be) or to hang (each is accepted
//! and never answered, as a wedged server's would be). Changing the mode cuts
//! every open connection, so pooled clients notice too.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    Pass,
    Refuse,
    Hang,
}

pub struct FaultProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<ProxyMode>>,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(watch::channel(ProxyMode::Pass).0);
        let modes = mode.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut changes = modes.subscribe();
                let current = *changes.borrow_and_update();
                tokio::spawn(async move {
                    match current {
                        ProxyMode::Refuse => drop(client),
                        ProxyMode::Hang => {
                            let _ = changes.changed().await;
                            drop(client);
                        }
                        ProxyMode::Pass => {
                            tokio::select! {
                                _ = pass(client, upstream) => {}
                                _ = changes.changed() => {}
                            }
                        }
                    }
                });
            }
        });
        Self { addr, mode, accept_loop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_replace(mode);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

async fn pass(mut client: TcpStream, upstream: SocketAddr) {
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    }
}

/// Where a URL's `host:port` is: after the scheme and any credentials, up to the path.
fn authority(url: &str) -> std::ops::Range<usize> {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let start = url[scheme_end..].find('@').map_or(scheme_end, |i| scheme_end + i + 1);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    start..end
}

/// `url` with its `host:port` replaced by `addr` (for pointing a client at a proxy).
pub fn via(url: &str, addr: SocketAddr) -> String {
    let range = authority(url);
    format!("{}{addr}{}", &url[..range.start], &url[range.end..])
}

/// The `host:port` of a URL, resolved.
pub async fn upstream_of(url: &str) -> SocketAddr {
    let host_port = &url[authority(url)];
    tokio::net::lookup_host(host_port).await.expect("resolving the upstream").next().expect("an address")
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_pointed_at_the_proxy() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(super::via("postgres://u:p@localhost:5432/db", addr), "postgres://u:p@127.0.0.1:9/db");
        assert_eq!(super::via("http://127.0.0.1:4566", addr), "http://127.0.0.1:9");
    }
}
