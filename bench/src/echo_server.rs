//! `wsproxy-bench echo-server PORT`: the command the sessions scenario launches, through wsproxy
//! and on its own.
//!
//! It binds 127.0.0.1:PORT and echoes every connection, a thread each, until it is killed
//! (SIGTERM's default action). No runtime, no output: from exec to listening it does little
//! more than the loader and one bind, so its start-up is short and steady, and what a launch
//! through wsproxy adds on top of it stands out. With `--announce` (the cluster scenario, PORT 0:
//! the kernel chooses) it then prints `ANNOUNCE 127.0.0.1:PORT` on stdout, the line a service's
//! `target = { announce = ... }` waits for.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::ExitCode;

use crate::cli::EchoServer;

/// What `--announce` prints before the address.
pub const ANNOUNCE: &str = "echo-server listening on";

pub fn main(args: &EchoServer) -> ExitCode {
    // std sets SO_REUSEADDR: a session's port is bound again right after its last command stopped.
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, args.port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("echo-server: cannot listen on 127.0.0.1:{}: {e}", args.port);
            return ExitCode::FAILURE;
        }
    };
    if args.announce {
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                eprintln!("echo-server: cannot read the address it listens on: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{ANNOUNCE} {addr}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::FAILURE;
        }
    }
    for stream in listener.incoming() {
        // EMFILE and the like: the client sees its connection fail.
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || echo(stream));
    }
    ExitCode::SUCCESS
}

fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = [0; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}
