//! A loopback TCP proxy for fault tests: it passes traffic to one upstream
//! (Postgres, the S3/SQS emulator) until told to refuse connections (it stops
//! listening, as a stopped server does) or to hang (connections are accepted
//! and never answered, as a wedged server's are). Changing the mode cuts every
//! open connection, so pooled clients notice too.

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
        let listener = listen(None).expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(watch::channel(ProxyMode::Pass).0);
        let accept_loop = tokio::spawn(accept_loop(listener, addr, upstream, mode.clone()));
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

/// A listener on `addr` (a free port when `None`), reusable right after it closed.
fn listen(addr: Option<SocketAddr>) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))))?;
    socket.listen(1024)
}

/// Serves connections in the current mode. `Refuse` closes the listening
/// socket itself, so clients get "connection refused" as from a stopped server.
async fn accept_loop(
    mut listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    modes: Arc<watch::Sender<ProxyMode>>,
) {
    let mut changes = modes.subscribe();
    loop {
        let current = *changes.borrow_and_update();
        if current == ProxyMode::Refuse {
            drop(listener);
            while *changes.borrow_and_update() == ProxyMode::Refuse {
                if changes.changed().await.is_err() {
                    return;
                }
            }
            listener = loop {
                match listen(Some(addr)) {
                    Ok(listener) => break listener,
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
            };
            continue;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = changes.changed() => continue,
        };
        let Ok((client, _)) = accepted else { continue };
        let mut connection_changes = modes.subscribe();
        connection_changes.borrow_and_update();
        tokio::spawn(async move {
            match current {
                ProxyMode::Refuse => drop(client),
                ProxyMode::Hang => {
                    let _ = connection_changes.changed().await;
                    drop(client);
                }
                ProxyMode::Pass => {
                    tokio::select! {
                        _ = pass(client, upstream) => {}
                        _ = connection_changes.changed() => {}
                    }
                }
            }
        });
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
