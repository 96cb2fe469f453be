//! A tiny TCP service for the spawned-server tests and the demo: it
//! listens on 127.0.0.1 at the port given as `--port N`, echoes what each
//! connection sends, and answers a line `PID?` with its process id.
//!
//! With `SPAWN_ECHO_REGISTRY=HOST:PORT` it tells a test's registry about
//! itself: one connection held open for its whole life (first line
//! `P <pid>`), and one per session, from its first byte to its end
//! (`S <pid>`). A session's end is sent (`E`) and acknowledged before the
//! session's socket closes, so usher cannot seat the next session before
//! the registry counted this one out: it counts live processes and
//! sessions exactly, from outside usher.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

fn register(kind: char) -> Option<TcpStream> {
    let registry = std::env::var("SPAWN_ECHO_REGISTRY").ok()?;
    let mut stream = TcpStream::connect(registry).ok()?;
    writeln!(stream, "{kind} {}", std::process::id()).ok()?;
    Some(stream)
}

fn serve(stream: TcpStream) {
    // Registered at its first byte: usher's readiness probe connects and
    // sends nothing, and is no session.
    let mut session = None;
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if session.is_none() {
                    session = register('S');
                }
                let reply =
                    if line == b"PID?\n" { format!("{}\n", std::process::id()).into_bytes() } else { line.clone() };
                if writer.write_all(&reply).is_err() {
                    break;
                }
            }
        }
    }
    // The registry counts the session out before usher can seat another.
    if let Some(mut session) = session {
        if session.write_all(b"E\n").is_ok() {
            let mut ack = String::new();
            let _ = BufReader::new(&mut session).read_line(&mut ack);
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let port = args
        .iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| {
            eprintln!("spawn_echo: expected --port N");
            std::process::exit(2);
        });
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|err| {
        eprintln!("spawn_echo: cannot listen on 127.0.0.1:{port}: {err}");
        std::process::exit(1);
    });
    let _life = register('P');
    println!("spawn_echo listening on 127.0.0.1:{port} stress={}", std::env::var("USHER_STRESS").unwrap_or_default());
    for stream in listener.incoming().flatten() {
        thread::spawn(move || serve(stream));
    }
}
