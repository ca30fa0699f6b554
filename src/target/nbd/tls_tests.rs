//! STARTTLS haggling and the TLS data path, against an in-memory export with a PSK server
//! and an OpenSSL PSK client over real sockets.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};

use super::proto::*;
use super::test_support::*;
use super::tls::{NbdTls, NbdTlsFiles, NbdTlsMode, TlsServer, parse_psk_keys, read_psk_file};

const SIZE: u64 = 1024 * 1024;
const IDENTITY: &str = "alice";
/// An export the PSK identity may reach ([`MemProvider`] grants `alice.*` to `alice`).
const EXPORT: &str = "alice.v";
const KEY: [u8; 32] = [0x5a; 32];

fn disk(name: &str) -> Arc<MemTarget> {
    Arc::new(MemTarget::new(name, SIZE, false))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

/// A listener's TLS in `mode` with one PSK identity (the key file lives in the tempdir).
fn psk_tls(mode: NbdTlsMode) -> (NbdTls, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let psk = dir.path().join("keys");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&psk, format!("# test keys\n{IDENTITY}:{hex}\n")).unwrap();
    std::fs::set_permissions(&psk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let files = NbdTlsFiles::in_data_dir(dir.path(), None, Some(psk));
    let server = TlsServer::load(&files)
        .expect("load")
        .expect("a PSK server");
    (NbdTls::new(mode, Some(server), &files).unwrap(), dir)
}

/// Greets, sends STARTTLS (expecting its ACK) and runs the TLS handshake with `key`.
fn tls_client(address: &Address, key: &'static [u8]) -> Result<Client, String> {
    let Address::Tcp(addr) = address else {
        panic!("TLS tests run on TCP");
    };
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut plain = Client::over(Box::new(tcp.try_clone().unwrap()));
    plain.read_vec(18);
    plain.write(&CLIENT_FLAGS_KNOWN.to_be_bytes());
    plain.send_option(OPT_STARTTLS, &[]);
    assert_eq!(plain.read_option_reply(), (OPT_STARTTLS, REP_ACK, vec![]));
    drop(plain);
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.set_verify(SslVerifyMode::NONE);
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_3))
        .unwrap();
    builder.set_psk_client_callback(move |_, _, identity, psk| {
        identity[..IDENTITY.len()].copy_from_slice(IDENTITY.as_bytes());
        identity[IDENTITY.len()] = 0;
        psk[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
    let connector = builder.build();
    let mut config = connector.configure().unwrap();
    config.set_verify_hostname(false);
    config.set_use_server_name_indication(false);
    let tls = config
        .connect("localhost", tcp)
        .map_err(|err| err.to_string())?;
    Ok(Client::over(Box::new(tls)))
}

#[test]
fn options_before_starttls_get_tls_required() {
    let (tls, _dir) = psk_tls(NbdTlsMode::Require);
    let server = TestServer::tcp_with_tls(vec![disk(EXPORT)], tls, false);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    let options: [(u32, Vec<u8>); 7] = [
        (OPT_LIST, vec![]),
        (OPT_STRUCTURED_REPLY, vec![]),
        (OPT_INFO, info_payload(EXPORT, &[])),
        (OPT_GO, info_payload(EXPORT, &[])),
        (OPT_SET_META_CONTEXT, meta_payload("v", &[BASE_ALLOCATION])),
        // Malformed and unknown options get the same answer.
        (OPT_GO, vec![0, 0, 0, 9]),
        (99, vec![1, 2, 3]),
    ];
    for (option, data) in options {
        client.send_option(option, &data);
        let (echoed, kind, _) = client.read_option_reply();
        assert_eq!(
            (echoed, kind),
            (option, REP_ERR_TLS_REQD),
            "option {option}"
        );
    }
    // ABORT is still answered, then the server closes.
    client.send_option(OPT_ABORT, &[]);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    assert!(client.is_closed_by_server());
    // EXPORT_NAME cannot carry an error: the connection closes.
    let mut legacy = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    legacy.send_option(OPT_EXPORT_NAME, b"v");
    assert!(legacy.is_closed_by_server());
}

#[test]
fn malformed_and_repeated_starttls_are_invalid_and_tls_carries_io() {
    let target = disk(EXPORT);
    let (tls, _dir) = psk_tls(NbdTlsMode::Require);
    let server = TestServer::tcp_with_tls(vec![Arc::clone(&target)], tls, false);
    // STARTTLS with a payload is refused and haggling goes on in the clear.
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_STARTTLS, b"x");
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    client.send_option(OPT_LIST, &[]);
    assert_eq!(client.read_option_reply().1, REP_ERR_TLS_REQD);
    drop(client);

    let mut client = tls_client(&server.address, &KEY).expect("TLS handshake");
    client.send_option(OPT_STARTTLS, &[]);
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    client.send_option(OPT_LIST, &[]);
    let (_, kind, _) = client.read_option_reply();
    assert_eq!(kind, REP_SERVER);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(OPT_GO, &info_payload(EXPORT, &[]));
    assert_eq!(client.read_info_replies().last().unwrap().0, REP_ACK);

    // Pipelined writes, then pipelined reads: replies come back through the shared TLS
    // session from several workers; a 256 KiB read spans many records.
    let requests = 32u64;
    let data = pattern(8192 * requests as usize, 3);
    for (cookie, chunk) in data.chunks(8192).enumerate() {
        let offset = cookie as u64 * 8192;
        client.send_with(0, 1, cookie as u64, offset, 8192, chunk);
    }
    for _ in 0..requests {
        assert_eq!(client.reply().error, 0);
    }
    assert_eq!(target.contents(0, data.len()), data);
    for cookie in 0..requests {
        client.send(0, 0, cookie, cookie * 8192, 8192);
    }
    for _ in 0..requests {
        let reply = client.reply();
        assert_eq!(reply.error, 0);
        let at = reply.cookie as usize * 8192;
        assert_eq!(reply.data, data[at..at + 8192]);
    }
    let big = client.call(0, 0, 0, data.len() as u32, &[]);
    assert_eq!(big.data, data);
    client.send(0, 2, 1, 0, 0);
    assert!(client.is_closed_by_server());
}

#[test]
fn tls_on_serves_plain_clients_and_off_refuses_starttls() {
    let target = disk(EXPORT);
    let (tls, _dir) = psk_tls(NbdTlsMode::On);
    // Open, as with `--nbd-open`: the plain anonymous client may reach the export.
    let server = TestServer::tcp_with_tls(vec![Arc::clone(&target)], tls, true);
    let mut plain = Client::connect(&server.address, EXPORT, Setup::PLAIN);
    plain.verified_write_read(4096, &pattern(4096, 9));
    let mut secured = tls_client(&server.address, &KEY).expect("TLS handshake");
    secured.send_option(OPT_GO, &info_payload(EXPORT, &[]));
    assert_eq!(secured.read_info_replies().last().unwrap().0, REP_ACK);
    secured.verified_write_read(0, &pattern(4096, 5));

    let (off, _dir) = psk_tls(NbdTlsMode::Off);
    let server = TestServer::tcp_with_tls(vec![disk(EXPORT)], off, false);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_STARTTLS, &[]);
    assert_eq!(client.read_option_reply().1, REP_ERR_UNSUP);
}

/// The names a client that finished haggling setup lists.
fn list_names(client: &mut Client) -> Vec<String> {
    client.send_option(OPT_LIST, &[]);
    let mut names = Vec::new();
    loop {
        let (_, kind, data) = client.read_option_reply();
        if kind == REP_ACK {
            return names;
        }
        assert_eq!(kind, REP_SERVER);
        names.push(String::from_utf8(data[4..].to_vec()).unwrap());
    }
}

#[test]
fn the_identity_tls_proved_decides_what_the_client_reaches_even_when_open() {
    let (tls, _dir) = psk_tls(NbdTlsMode::On);
    let exports = vec![disk(EXPORT), disk("bob.v")];
    let server = TestServer::tcp_with_tls(exports, tls, true);
    // In the clear, under open, the anonymous client sees everything ...
    let mut plain = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    assert_eq!(list_names(&mut plain), [EXPORT, "bob.v"]);
    // ... while a client whose STARTTLS proved `alice` sees only alice's export.
    let mut secured = tls_client(&server.address, &KEY).expect("TLS handshake");
    assert_eq!(list_names(&mut secured), [EXPORT]);
    for option in [OPT_INFO, OPT_GO] {
        secured.send_option(option, &info_payload("bob.v", &[]));
        assert_eq!(
            secured.read_info_replies(),
            vec![(REP_ERR_UNKNOWN, b"no such export".to_vec())]
        );
    }
    secured.send_option(OPT_GO, &info_payload(EXPORT, &[]));
    assert_eq!(secured.read_info_replies().last().unwrap().0, REP_ACK);
    secured.verified_write_read(0, &pattern(4096, 7));
}

#[test]
fn a_wrong_key_is_refused_and_the_server_stays_up() {
    static WRONG: [u8; 32] = [0x11; 32];
    let (tls, _dir) = psk_tls(NbdTlsMode::Require);
    let server = TestServer::tcp_with_tls(vec![disk(EXPORT)], tls, false);
    assert!(tls_client(&server.address, &WRONG).is_err());
    let mut client = tls_client(&server.address, &KEY).expect("the right key still works");
    client.send_option(OPT_GO, &info_payload(EXPORT, &[]));
    assert_eq!(client.read_info_replies().last().unwrap().0, REP_ACK);
}

#[test]
fn psk_files_are_parsed_and_open_ones_refused() {
    let keys = parse_psk_keys("# comment\n\nalice:00ff10\nbob:0A0b\n").unwrap();
    assert_eq!(keys["alice"], vec![0x00, 0xff, 0x10]);
    assert_eq!(keys["bob"], vec![0x0a, 0x0b]);
    for bad in ["nocolon", ":00", "a:0", "a:zz", "a:"] {
        assert!(parse_psk_keys(bad).is_err(), "{bad:?} accepted");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    std::fs::write(&path, "alice:00ff\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = read_psk_file(&path).unwrap_err();
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(read_psk_file(&path).unwrap().len(), 1);
}

#[test]
fn tls_without_credentials_names_the_files_to_create() {
    let dir = tempfile::tempdir().unwrap();
    let files = NbdTlsFiles::in_data_dir(dir.path(), None, None);
    assert!(TlsServer::load(&files).unwrap().is_none());
    let err = NbdTls::new(NbdTlsMode::Require, None, &files).unwrap_err();
    assert!(
        err.contains("server-cert.pem") && err.contains("nbd-psk.keys"),
        "{err}"
    );
    assert!(err.contains("--nbd-tls off"), "{err}");
    assert!(NbdTls::new(NbdTlsMode::Off, None, &files).is_ok());
}
