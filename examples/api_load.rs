//! Load generator for the management API: `CONNECTIONS` keep-alive connections send
//! `GET TARGET` with HTTP basic credentials for `SECONDS`, then the requests per second and
//! latency percentiles are printed. Used by `test-rigs/api-load.sh`.
//!
//! `cargo run --release --example api_load -- HOST:PORT USER PASSWORD TARGET SECONDS CONNECTIONS`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use base64::Engine;

/// Reads one response and returns its status; the body is read and dropped.
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    Ok(status)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, user, password, target, seconds, connections] = args.as_slice() else {
        eprintln!("usage: api_load HOST:PORT USER PASSWORD TARGET SECONDS CONNECTIONS");
        std::process::exit(2);
    };
    let seconds: f64 = seconds.parse().expect("SECONDS is a number");
    let connections: usize = connections.parse().expect("CONNECTIONS is a number");
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: troika\r\nAuthorization: Basic {credentials}\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            let address = address.clone();
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&address).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                let mut latencies = Vec::new();
                let mut failures = 0u64;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    writer.write_all(request.as_bytes()).expect("send");
                    match read_response(&mut reader) {
                        Ok(200) => latencies.push(started.elapsed()),
                        Ok(_) => failures += 1,
                        Err(error) => panic!("connection failed: {error}"),
                    }
                }
                (latencies, failures)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut mine, failed) = worker.join().expect("worker");
        latencies.append(&mut mine);
        failures += failed;
    }
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{target}: {} requests in {seconds} s on {connections} connection(s): {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {failures} non-200",
        latencies.len(),
        latencies.len() as f64 / seconds,
        percentile(0.50),
        percentile(0.99)
    );
}
