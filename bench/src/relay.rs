//! `wsproxy-bench relay LISTEN TARGET`: the least a relay can do, as a reference peer.
//!
//! It copies bytes both ways with tokio's `copy_bidirectional` (256 KiB buffers) on a
//! current_thread runtime, as wsproxy runs, and nothing else: no HTTP, no framing, no logging.
//! Put in front of the in-process WebSocket server (`{ws-target}`), it shows what one more hop
//! costs in each scenario with wsproxy's own runtime, which is the ceiling for wsproxy on this
//! machine; socat is the same idea with a different I/O loop (and a process per connection).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::cli::Relay;

/// The size of each direction's buffer, as wsproxy's.
const BUF: usize = 256 * 1024;

pub fn main(args: &Relay) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args.listen, args.target)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(listen: SocketAddr, target: SocketAddr) -> Result<(), String> {
    if !listen.ip().is_loopback() || !target.ip().is_loopback() {
        return Err("only loopback addresses are relayed".into());
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(_) => {
                // EMFILE and the like: the benchmark sees its connections fail.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(target).await else {
                return;
            };
            let (mut client, mut upstream) = (client, upstream);
            if client.set_nodelay(true).is_ok() && upstream.set_nodelay(true).is_ok() {
                let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUF, BUF).await;
            }
        });
    }
}
