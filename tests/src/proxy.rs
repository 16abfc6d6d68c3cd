//! A fault-injecting TCP proxy for tests, in front of a real service.
//!
//! - [`FaultyProxy::cut`]: drops every open connection and refuses new ones (a service that went
//!   away cleanly, or a crash: the peer sees the connection close).
//! - [`FaultyProxy::stall`]: stops forwarding bytes in both directions without closing anything,
//!   and holds new connections the same way (a network cut: nothing tells the peer; only its
//!   heartbeats or timeouts can notice).
//! - [`FaultyProxy::restore`]: forwards again.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
    task::JoinHandle,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Up,
    Stalled,
    Cut,
}

#[derive(Debug)]
struct State {
    mode: watch::Sender<Mode>,
    refused: AtomicU64,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

/// A running proxy on 127.0.0.1.
#[derive(Debug)]
pub struct FaultyProxy {
    pub port: u16,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

/// Waits until forwarding is allowed; false when the connection must be dropped.
async fn forwarding(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Stalled).await {
        Ok(m) => *m == Mode::Up,
        Err(_) => false,
    }
}

async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !forwarding(&mut mode).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if !forwarding(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl FaultyProxy {
    /// Starts forwarding 127.0.0.1:`port` to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            mode: watch::channel(Mode::Up).0,
            refused: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *shared.mode.borrow() == Mode::Cut {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    drop(inbound);
                    continue;
                }
                let mode = shared.mode.subscribe();
                let forward = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::select! {
                        () = pipe(in_read, out_write, mode.clone()) => {}
                        () = pipe(out_read, in_write, mode) => {}
                    }
                });
                shared.connections.lock().unwrap().push(forward);
            }
        });
        Self {
            port,
            state,
            accept,
        }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.state.mode.send_replace(Mode::Cut);
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Stops forwarding without closing anything.
    pub fn stall(&self) {
        self.state.mode.send_replace(Mode::Stalled);
    }

    /// Forwards again.
    pub fn restore(&self) {
        self.state.mode.send_replace(Mode::Up);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}
