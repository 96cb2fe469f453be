//! The faults of `faults.rs` at random, mixed: 200 concurrent clients for a
//! bounded time, each session drawing one fault — a server that stays
//! silent, resets, closes at once or answers after a half-close, a client
//! that resets, a server whose backlog is full, one that is gone — through
//! servers small enough that clients queue. Every session's record must
//! carry the code its fault calls for, and at the end everything is back
//! (`integration_tests::at_rest`).
//!
//! The draw is seeded: the seed is printed at the start and in every failure
//! message; `USHER_FAULT_SEED=<n>` replays one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_tests::at_rest::codes_of;
use integration_tests::{
    assert_everything_back, Fault, FaultyServer, FullBacklogServer, Script, ServerUnderTest, TestBroker, DEADLINE,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const CLIENTS: usize = 200;
/// How long clients start new sessions.
const RUN: Duration = Duration::from_secs(8);
/// Slots of each server of the main backend: 200 clients queue for 24.
const MAXCONN: u32 = 8;
/// `timeout.server` of the main backend: what a silent server costs.
const SERVER_TIMEOUT_MS: u64 = 200;
/// What a resetting server sends before its reset.
const RESET_AFTER: usize = 1000;
/// What a server answers after the client's half-close.
const ANSWER: usize = 64 << 10;

/// One session's fault, drawn per session.
#[derive(Debug, Clone, Copy)]
enum Draw {
    /// A well-behaved echo, for contrast.
    Echo,
    /// The server never answers.
    SilentServer,
    /// The server sends some bytes, then resets.
    ServerReset,
    /// The server closes before answering.
    ServerClose,
    /// The client half-closes and reads the whole answer.
    ClientHalfClose,
    /// The client resets while relaying.
    ClientReset,
    /// The only server's backlog is full.
    FullBacklog,
    /// The only server is gone: connections are refused.
    ServerGone,
}

impl Draw {
    const ALL: [Draw; 8] = [
        Draw::Echo,
        Draw::SilentServer,
        Draw::ServerReset,
        Draw::ServerClose,
        Draw::ClientHalfClose,
        Draw::ClientReset,
        Draw::FullBacklog,
        Draw::ServerGone,
    ];

    /// The termination codes its record may carry. A full backlog times out
    /// (`sC`), unless the server was already given up on (`SC`, no server).
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Draw::Echo | Draw::ServerClose | Draw::ClientHalfClose => &["--"],
            Draw::SilentServer => &["sD"],
            Draw::ServerReset => &["SD"],
            Draw::ClientReset => &["CD"],
            Draw::FullBacklog => &["sC", "SC"],
            Draw::ServerGone => &["SC"],
        }
    }

    fn frontend(self) -> &'static str {
        match self {
            Draw::FullBacklog => "dead",
            Draw::ServerGone => "gone",
            _ => "web",
        }
    }
}

/// One session as the client saw it.
struct Outcome {
    draw: Draw,
    /// The client's address: the access record's `client`.
    local: SocketAddr,
    started: Instant,
    /// What the client saw go wrong, if anything.
    problem: Option<String>,
}

fn seed() -> u64 {
    match std::env::var("USHER_FAULT_SEED") {
        Ok(text) => text.parse().unwrap_or_else(|_| panic!("USHER_FAULT_SEED: expected an integer, found {text:?}")),
        Err(_) => rand::random(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_from_200_clients_leave_nothing_behind() {
    let seed = seed();
    println!("USHER_FAULT_SEED={seed}");
    let context = format!("USHER_FAULT_SEED={seed}");

    let app: Vec<FaultyServer> = (0..3)
        .map(|_| {
            FaultyServer::start(Fault::Scripted { reset_after: RESET_AFTER, answer: Arc::new(vec![b'a'; ANSWER]) })
        })
        .collect();
    let dead = FullBacklogServer::start().await;
    let mut gone = FaultyServer::start(Fault::Echo);
    gone.stop().await;
    let mut toml = format!(
        "[frontends.web]\nbind = [\"127.0.0.1:0\"]\nbackend = \"app\"\n\
         [frontends.dead]\nbind = [\"127.0.0.1:0\"]\nbackend = \"dead\"\n\
         [frontends.gone]\nbind = [\"127.0.0.1:0\"]\nbackend = \"gone\"\n\
         [backends.app.timeout]\nserver = \"{SERVER_TIMEOUT_MS}ms\"\n\
         [backends.dead]\nretries = 1\n[backends.dead.timeout]\nconnect = \"50ms\"\n\
         [backends.dead.servers.s1]\naddress = \"{}\"\nmaxconn = {MAXCONN}\n\
         [backends.gone]\nretries = 1\nredispatch = false\n[backends.gone.timeout]\nconnect = \"50ms\"\n\
         [backends.gone.servers.s1]\naddress = \"{}\"\nmaxconn = {MAXCONN}\n",
        dead.addr, gone.addr
    );
    for (i, s) in app.iter().enumerate() {
        toml.push_str(&format!("[backends.app.servers.s{}]\naddress = \"{}\"\nmaxconn = {MAXCONN}\n", i + 1, s.addr));
    }
    let broker = TestBroker::start_with_admin(&toml);
    let frontends: HashMap<&str, SocketAddr> =
        ["web", "dead", "gone"].into_iter().map(|f| (f, broker.addr(f))).collect();

    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stop_at = Instant::now() + RUN;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (frontends, outcomes) = (frontends.clone(), outcomes.clone());
            let mut rng = StdRng::seed_from_u64(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    let draw = Draw::ALL[rng.gen_range(0..Draw::ALL.len())];
                    let outcome = play(draw, frontends[draw.frontend()]).await;
                    outcomes.lock().expect("outcomes").push(outcome);
                }
            })
        })
        .collect();
    for c in clients {
        tokio::time::timeout(RUN + DEADLINE, c)
            .await
            .unwrap_or_else(|_| panic!("a client hung [{context}]"))
            .expect("client task");
    }
    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    let problems: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.problem.as_ref().map(|p| format!("{:?} from {}: {p}", o.draw, o.local)))
        .collect();
    assert!(problems.is_empty(), "{} sessions went wrong [{context}]:\n{}", problems.len(), problems.join("\n"));

    let records = broker.logs.wait_sessions(outcomes.len()).await;
    assert_eq!(records.len(), outcomes.len(), "one access record per session [{context}]");
    check_each_record(&outcomes, &records, &context);
    let mut draws = BTreeMap::new();
    for o in &outcomes {
        *draws.entry(format!("{:?}", o.draw)).or_insert(0) += 1;
    }
    println!("{} sessions in {RUN:?}: {draws:?}", outcomes.len());

    let mut servers: Vec<ServerUnderTest<'_>> = Vec::new();
    let names = ["s1", "s2", "s3"];
    for (s, name) in app.iter().zip(names) {
        servers.push(ServerUnderTest { backend: "app", server: name, counts: s });
    }
    servers.push(ServerUnderTest { backend: "dead", server: "s1", counts: &dead });
    servers.push(ServerUnderTest { backend: "gone", server: "s1", counts: &gone });
    assert_everything_back(&broker, &servers, &codes_of(&records), &context).await;
    broker.stop().await.expect("clean stop");
}

/// Matches every record to its client's session by address and frontend,
/// in accept order, and checks its code. The frontend is part of the key:
/// the kernel gives the same source port to connections to different
/// frontends at once (the 4-tuples differ); to one frontend an address is
/// reused only after its previous session closed.
fn check_each_record(outcomes: &[Outcome], records: &[integration_tests::Record], context: &str) {
    let mut sessions: HashMap<(String, &str), Vec<&Outcome>> = HashMap::new();
    for o in outcomes {
        sessions.entry((o.local.to_string(), o.draw.frontend())).or_default().push(o);
    }
    for list in sessions.values_mut() {
        list.sort_by_key(|o| o.started);
    }
    let mut records: Vec<&integration_tests::Record> = records.iter().collect();
    records.sort_by_key(|r| r.int("session"));
    let mut next: HashMap<(String, &str), usize> = HashMap::new();
    let mut wrong = Vec::new();
    for r in records {
        let client = (r.get("client").to_owned(), r.get("frontend"));
        let at = next.entry(client.clone()).or_default();
        let Some(outcome) = sessions.get(&client).and_then(|l| l.get(*at)) else {
            wrong.push(format!("a record for no session of this test: {r:?}"));
            continue;
        };
        *at += 1;
        if !outcome.draw.allowed().contains(&r.termination()) {
            wrong.push(format!(
                "{:?} ended {}, expected one of {:?}: {r:?}",
                outcome.draw,
                r.termination(),
                outcome.draw.allowed()
            ));
        }
    }
    assert!(wrong.is_empty(), "{} records with the wrong code [{context}]:\n{}", wrong.len(), wrong.join("\n"));
}

/// Runs one session with its fault and says what the client saw.
async fn play(draw: Draw, frontend: SocketAddr) -> Outcome {
    let started = Instant::now();
    let mut client = match TcpStream::connect(frontend).await {
        Ok(c) => c,
        Err(err) => panic!("connect to usher at {frontend}: {err}"),
    };
    let local = client.local_addr().expect("local address");
    let problem = tokio::time::timeout(DEADLINE, run(draw, &mut client))
        .await
        .unwrap_or_else(|_| Err(format!("no end within {DEADLINE:?}")))
        .err();
    if let Draw::ClientReset = draw {
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).expect("linger 0 → RST");
    }
    drop(client);
    Outcome { draw, local, started, problem }
}

/// What the client does for `draw`; `Err` says what went wrong.
async fn run(draw: Draw, c: &mut TcpStream) -> Result<(), String> {
    let io = |what: &'static str| move |err: std::io::Error| format!("{what}: {err}");
    match draw {
        Draw::Echo => {
            let payload = [Script::Echo.byte(), 1, 2, 3, 4, 5, 6, 7];
            c.write_all(&payload).await.map_err(io("write"))?;
            c.shutdown().await.map_err(io("half-close"))?;
            let got = read_all(c).await?;
            expect(got == payload, || format!("echo {got:?}"))
        }
        Draw::SilentServer => {
            c.write_all(&[Script::Silent.byte()]).await.map_err(io("write"))?;
            let got = read_all(c).await?;
            expect(got.is_empty(), || format!("a silent server answered {} bytes", got.len()))
        }
        Draw::ServerReset => {
            c.write_all(&[Script::Reset.byte()]).await.map_err(io("write"))?;
            // The bytes before the reset may or may not make it; the end must come.
            let got = read_until_end(c).await;
            expect(got <= RESET_AFTER, || format!("{got} bytes from a server that sent {RESET_AFTER}"))
        }
        Draw::ServerClose => {
            c.write_all(&[Script::Close.byte()]).await.map_err(io("write"))?;
            let got = read_all(c).await?;
            expect(got.is_empty(), || format!("{} bytes from a server that closed", got.len()))
        }
        Draw::ClientHalfClose => {
            c.write_all(&[Script::AnswerAfterEof.byte(), b'q']).await.map_err(io("write"))?;
            c.shutdown().await.map_err(io("half-close"))?;
            let got = read_all(c).await?;
            expect(got.len() == ANSWER && got.iter().all(|b| *b == b'a'), || format!("answer of {} bytes", got.len()))
        }
        Draw::ClientReset => {
            // Seated and relaying (the echo came back), then reset by the caller.
            c.write_all(&[Script::Echo.byte()]).await.map_err(io("write"))?;
            let mut one = [0u8; 1];
            c.read_exact(&mut one).await.map_err(io("echo"))?;
            Ok(())
        }
        Draw::FullBacklog | Draw::ServerGone => {
            c.write_all(b"x").await.map_err(io("write"))?;
            let got = read_until_end(c).await;
            expect(got == 0, || format!("{got} bytes from a server nobody reached"))
        }
    }
}

fn expect(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// Reads to EOF; a reset is an error.
async fn read_all(c: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.map_err(|err| format!("read after {} bytes: {err}", got.len()))?;
    Ok(got)
}

/// Reads until EOF or a reset; returns how many bytes came.
async fn read_until_end(c: &mut TcpStream) -> usize {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while let Ok(n @ 1..) = c.read(&mut buf).await {
        got += n;
    }
    got
}
