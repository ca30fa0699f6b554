//! The management API cannot be starved: idle and slowloris connections do not keep an
//! authenticated client out, and parallel password guessing is limited server-side.
//!
//! The bounded waits asserted here (an answer within 1 s under the flood) are what the
//! issue asks for.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{TestNode, ci_model};
use troika::cli::client::{Client, Endpoint};
use troika::mgmt::login_limit::NAME_FAILURES;

/// The attacks run one at a time: each is a flood sized for the whole machine (2 cores in
/// CI), and a flood running beside another test's measurement would measure the two
/// floods together, not one.
fn one_attack_at_a_time() -> MutexGuard<'static, ()> {
    static ATTACKS: Mutex<()> = Mutex::new(());
    ATTACKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn https_client(node: &TestNode, user: &str, password: &str) -> Client {
    let url = format!("https://127.0.0.1:{}", node.api_port.expect("api port"));
    Client::with_endpoint(Endpoint::parse_url(&url).unwrap(), Some((user, password)))
        .with_ca_file(&node.tls_cert_path())
        .expect("the node's certificate is a usable CA file")
}

/// Keeps `count` idle TCP connections open to `port` until `stop`, reopening those the
/// server closes; returns how many it opened in all.
fn idle_flood(port: u16, count: usize, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let open = || {
            let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
            stream.set_nonblocking(true).ok()?;
            Some(stream)
        };
        let mut opened = 0u64;
        let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| open()).collect();
        opened += count as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            for slot in &mut streams {
                let mut byte = [0u8; 1];
                let closed = match slot {
                    Some(stream) => !matches!(
                        stream.read(&mut byte),
                        Err(ref error) if error.kind() == std::io::ErrorKind::WouldBlock
                    ),
                    None => true,
                };
                if closed {
                    *slot = open();
                    opened += 1;
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        opened
    })
}

/// A TLS client that completes its handshake, then sends a request head one byte every
/// 500 ms; returns when the server closes it (or after 20 s), with how long that took.
fn slowloris(node: &TestNode) -> thread::JoinHandle<Duration> {
    let port = node.api_port.unwrap();
    let config = troika::mgmt::tls::client_config(&node.tls_cert_path()).unwrap();
    thread::spawn(move || {
        let started = Instant::now();
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(config, name).unwrap();
        let mut tls = rustls::StreamOwned::new(connection, tcp);
        let head = b"GET /api/rest/system HTTP/1.1\r\nHost: troika\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for byte in head.iter().cycle().take(40) {
            if tls.write_all(&[*byte]).and_then(|()| tls.flush()).is_err() {
                break;
            }
            thread::sleep(Duration::from_millis(500));
        }
        started.elapsed()
    })
}

#[test]
fn idle_and_slowloris_floods_do_not_keep_an_authenticated_client_out() {
    let _alone = one_attack_at_a_time();
    let node = TestNode::start_with_https_api(ci_model(), &[]);
    let password = node.admin_password();
    // Warm up: the admin's credentials are checked once before the flood.
    let (status, _) = https_client(&node, "admin", &password)
        .request("GET", "/api/rest/system", None)
        .unwrap();
    assert_eq!(status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let flood = idle_flood(node.api_port.unwrap(), 200, stop.clone());
    let slow = slowloris(&node);
    thread::sleep(Duration::from_secs(1));
    for round in 0..4 {
        let client = https_client(&node, "admin", &password);
        let asked = Instant::now();
        let (status, body) = client
            .request("GET", "/api/rest/system", None)
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        let took = asked.elapsed();
        assert_eq!(status, 200, "round {round}: {body}");
        assert!(
            took < Duration::from_secs(1),
            "round {round}: an authenticated request took {took:?} under the flood"
        );
        thread::sleep(Duration::from_millis(700));
    }
    let slow_for = slow.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let opened = flood.join().unwrap();
    assert!(
        opened > 200,
        "the server closed no idle connection ({opened} opened)"
    );
    // The head must arrive within 5 s of its first byte; the handshake came first.
    assert!(
        slow_for < Duration::from_secs(12),
        "the slowloris client was kept for {slow_for:?}"
    );
}

#[test]
fn parallel_password_guessing_is_limited_and_the_lockout_ends() {
    let _alone = one_attack_at_a_time();
    let lockout_secs = 3u64;
    let node = TestNode::start_with_https_api(
        ci_model(),
        &["--mgmt-login-lockout", &lockout_secs.to_string()],
    );
    let password = node.admin_password();
    let checks = |node: &TestNode| node.metrics()["troika_mgmt_login_checks_total"];
    let before = checks(&node);

    let attack = Duration::from_secs(10);
    let unauthorized = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let guessers: Vec<_> = (0..32)
        .map(|index| {
            let client = https_client(&node, "admin", &format!("guess-{index}"));
            let (unauthorized, limited) = (unauthorized.clone(), limited.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let mut sent = 0;
                while started.elapsed() < attack && sent < 100_000 {
                    sent += 1;
                    match client.request("GET", "/api/rest/system", None) {
                        Ok((401, _)) => unauthorized.fetch_add(1, Ordering::Relaxed),
                        Ok((429, _)) => limited.fetch_add(1, Ordering::Relaxed),
                        Ok((status, body)) => panic!("a guess got {status}: {body}"),
                        Err(_) => 0,
                    };
                }
            })
        })
        .collect();
    for guesser in guessers {
        guesser.join().unwrap();
    }
    let evaluated = checks(&node) - before;
    // One allowance per lockout period that began during the attack.
    let allowed = u64::from(NAME_FAILURES) * (attack.as_secs() / lockout_secs + 1);
    assert!(
        evaluated <= allowed,
        "{evaluated} guesses were checked in {attack:?}; the policy allows {allowed}"
    );
    assert!(
        evaluated >= u64::from(NAME_FAILURES),
        "the attack was not evaluated at all"
    );
    assert_eq!(unauthorized.load(Ordering::Relaxed), evaluated);
    assert!(limited.load(Ordering::Relaxed) > 0);
    let (status, events) =
        node.http_get("/api/rest/events?code=eq:USER_LOGIN_LOCKED_OUT&page_size=100");
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("USER_LOGIN_LOCKED_OUT"), "{events}");

    // Once the lockout ends, the right password works.
    let deadline = Instant::now() + Duration::from_secs(lockout_secs * 3);
    let admin = https_client(&node, "admin", &password);
    loop {
        let (status, body) = admin.request("GET", "/api/rest/system", None).unwrap();
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(Instant::now() < deadline, "the lockout did not end: {body}");
        thread::sleep(Duration::from_millis(250));
    }
}

/// Measurement for the report, not a check: a legitimate user's request rate alone and
/// while 32 clients guess its password. Run with `--ignored --nocapture`.
#[test]
#[ignore]
fn login_throughput_under_a_guessing_attack() {
    let _alone = one_attack_at_a_time();
    let node = TestNode::start_with_https_api(ci_model(), &[]);
    let password = node.admin_password();
    let window = Duration::from_secs(5);
    let rate = |client: &Client| {
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < window && done < 1_000_000 {
            let (status, _) = client.request("GET", "/api/rest/system", None).unwrap();
            assert_eq!(status, 200);
            done += 1;
        }
        done as f64 / started.elapsed().as_secs_f64()
    };
    let legit = https_client(&node, "admin", &password);
    let idle = rate(&legit);
    // A user who logs in afresh for each request (new connection, basic credentials):
    // answers per second (200, 429, and connections closed before an answer).
    let fresh = |_: ()| {
        let started = Instant::now();
        let (mut ok, mut limited, mut lost) = (0u64, 0u64, 0u64);
        while started.elapsed() < window && ok + limited + lost < 100_000 {
            let client = https_client(&node, "admin", &password);
            match client.request("GET", "/api/rest/system", None) {
                Ok((200, _)) => ok += 1,
                Ok((429, _)) => limited += 1,
                Ok((status, body)) => panic!("{status}: {body}"),
                Err(_) => lost += 1,
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        format!(
            "{:.1} ok/s, {:.1} 429/s, {:.1} closed/s",
            ok as f64 / seconds,
            limited as f64 / seconds,
            lost as f64 / seconds
        )
    };
    let fresh_idle = fresh(());
    let stop = Arc::new(AtomicBool::new(false));
    let guesses = Arc::new(AtomicU64::new(0));
    let guessers: Vec<_> = (0..32)
        .map(|index| {
            let client = https_client(&node, "admin", &format!("guess-{index}"));
            let (stop, guesses) = (stop.clone(), guesses.clone());
            thread::spawn(move || {
                let mut sent = 0;
                while !stop.load(Ordering::Relaxed) && sent < 1_000_000 {
                    let _ = client.request("GET", "/api/rest/system", None);
                    guesses.fetch_add(1, Ordering::Relaxed);
                    sent += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let attacked = rate(&legit);
    let guesses_before = guesses.load(Ordering::Relaxed);
    let fresh_attacked = fresh(());
    let guess_rate =
        (guesses.load(Ordering::Relaxed) - guesses_before) as f64 / window.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for guesser in guessers {
        guesser.join().unwrap();
    }
    println!(
        "login-flood: keep-alive user {idle:.0} req/s idle, {attacked:.0} req/s under 32 guessers; \
         new-connection user idle: {fresh_idle}; under attack: {fresh_attacked} \
         (the attack's own requests: {guess_rate:.0}/s)"
    );
}
