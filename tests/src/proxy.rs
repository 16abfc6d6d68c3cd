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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
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
    /// Starts forwarding 127.0.0.1:`port` to `target`. The proxy runs on its own thread and
    /// runtime, so that it keeps forwarding while the test's runtime is blocked (for instance in
    /// a `Drop` that cleans up through it).
    pub async fn start(target: SocketAddr) -> Self {
        let state = Arc::new(State {
            mode: watch::channel(Mode::Up).0,
            refused: AtomicU64::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                loop {
                    let inbound = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((inbound, _)) => inbound,
                            Err(_) => return,
                        },
                    };
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
        });
        let port = port_rx.recv().unwrap();
        Self {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
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

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.state
            .connections
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.is_finished())
            .count()
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
