//! NBD front-end tests: handshake, commands, errors, concurrency, hostile input and the
//! pure parsers, against an in-memory export over real sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::proto::*;
use super::test_support::*;
use super::transmission::encode_block_status;
use super::{NbdConfig, nbd_errno};
use crate::target::Extent;
use crate::types::IoError;

const READ: u16 = 0;
const WRITE: u16 = 1;
const DISC: u16 = 2;
const FLUSH: u16 = 3;
const TRIM: u16 = 4;
const CACHE: u16 = 5;
const WRITE_ZEROES: u16 = 6;
const BLOCK_STATUS: u16 = 7;

const SIZE: u64 = 1024 * 1024;

fn disk(name: &str) -> Arc<MemTarget> {
    Arc::new(MemTarget::new(name, SIZE, false))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn go_with_structured_replies_and_meta_context() {
    let server = TestServer::tcp(vec![disk("vol1")]);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(
        client.read_option_reply(),
        (OPT_STRUCTURED_REPLY, REP_ACK, vec![])
    );
    client.send_option(
        OPT_SET_META_CONTEXT,
        &meta_payload("vol1", &[BASE_ALLOCATION]),
    );
    let (option, kind, data) = client.read_option_reply();
    assert_eq!((option, kind), (OPT_SET_META_CONTEXT, REP_META_CONTEXT));
    assert_eq!(&data[0..4], &BASE_ALLOCATION_ID.to_be_bytes());
    assert_eq!(&data[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(client.read_option_reply().1, REP_ACK);

    client.send_option(OPT_GO, &info_payload("vol1", &[INFO_BLOCK_SIZE, INFO_NAME]));
    let replies = client.read_info_replies();
    assert_eq!(replies.last().unwrap().0, REP_ACK);
    assert_eq!(client.size, SIZE);
    let expected = TFLAG_HAS_FLAGS
        | TFLAG_SEND_FLUSH
        | TFLAG_SEND_FUA
        | TFLAG_SEND_TRIM
        | TFLAG_SEND_WRITE_ZEROES
        | TFLAG_SEND_FAST_ZERO
        | TFLAG_SEND_CACHE
        | TFLAG_CAN_MULTI_CONN
        | TFLAG_SEND_DF;
    assert_eq!(client.flags, expected);
    let block = replies
        .iter()
        .find(|(_, d)| d[0..2] == INFO_BLOCK_SIZE.to_be_bytes())
        .expect("block size info");
    assert_eq!(&block.1[2..6], &512u32.to_be_bytes());
    assert_eq!(&block.1[6..10], &4096u32.to_be_bytes());
    assert_eq!(&block.1[10..14], &TEST_MAX_PAYLOAD.to_be_bytes());
    let name = replies
        .iter()
        .find(|(_, d)| d[0..2] == INFO_NAME.to_be_bytes())
        .expect("name info");
    assert_eq!(&name.1[2..], b"vol1");

    client.verified_write_read(4096, &pattern(8192, 1));
    let status = client.call(0, BLOCK_STATUS, 0, 16384, &[]);
    assert_eq!(status.error, 0);
    assert_eq!(status.context_id, BASE_ALLOCATION_ID);
    assert_eq!(
        status.status,
        vec![
            (4096, STATE_HOLE | STATE_ZERO),
            (8192, 0),
            (4096, STATE_HOLE | STATE_ZERO)
        ]
    );
    client.send(0, DISC, 1, 0, 0);
    assert!(client.drains_to_eof());
}

#[test]
fn list_and_info() {
    let server = TestServer::tcp(vec![disk("a"), disk("b")]);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_LIST, &[]);
    for name in ["a", "b"] {
        let (_, kind, data) = client.read_option_reply();
        assert_eq!(kind, REP_SERVER);
        assert_eq!(&data[0..4], &1u32.to_be_bytes());
        assert_eq!(&data[4..], name.as_bytes());
    }
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(OPT_LIST, b"junk");
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);

    client.send_option(
        OPT_INFO,
        &info_payload("b", &[INFO_NAME, INFO_DESCRIPTION, 77]),
    );
    let replies = client.read_info_replies();
    assert_eq!(replies.last().unwrap().0, REP_ACK);
    let kinds: Vec<u16> = replies[..replies.len() - 1]
        .iter()
        .map(|(_, d)| u16::from_be_bytes([d[0], d[1]]))
        .collect();
    assert_eq!(
        kinds,
        vec![INFO_EXPORT, INFO_BLOCK_SIZE, INFO_NAME, INFO_DESCRIPTION]
    );
    assert_eq!(client.size, SIZE);

    // Unknown export; the empty name is ambiguous with two exports.
    for name in ["nope", ""] {
        client.send_option(OPT_INFO, &info_payload(name, &[]));
        assert_eq!(
            client.read_info_replies(),
            vec![(REP_ERR_UNKNOWN, b"no such export".to_vec())]
        );
        client.send_option(OPT_GO, &info_payload(name, &[]));
        assert_eq!(
            client.read_info_replies().last().unwrap().0,
            REP_ERR_UNKNOWN
        );
    }
    // Still haggling: GO on a real export works.
    client.send_option(OPT_GO, &info_payload("a", &[]));
    assert_eq!(client.read_info_replies().last().unwrap().0, REP_ACK);
    client.verified_write_read(0, &pattern(512, 2));
}

/// Lists the exports a fresh client on `address` sees.
fn listed(address: &Address) -> Vec<String> {
    let mut client = Client::start(address, CLIENT_FLAGS_KNOWN);
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
fn anonymous_tcp_clients_see_and_open_nothing() {
    let closed = TestServer::tcp_with(vec![disk("a"), disk("b")], false);
    assert!(listed(&closed.address).is_empty());
    let mut client = Client::start(&closed.address, CLIENT_FLAGS_KNOWN);
    // An existing export answers exactly as a missing one does.
    for name in ["a", "nope", ""] {
        client.send_option(OPT_INFO, &info_payload(name, &[]));
        assert_eq!(
            client.read_info_replies(),
            vec![(REP_ERR_UNKNOWN, b"no such export".to_vec())],
            "{name:?}"
        );
        client.send_option(OPT_GO, &info_payload(name, &[]));
        assert_eq!(
            client.read_info_replies(),
            vec![(REP_ERR_UNKNOWN, b"no such export".to_vec())],
            "{name:?}"
        );
    }
    // The legacy way in has no error reply: the server closes.
    client.send_option(OPT_EXPORT_NAME, b"a");
    assert!(client.is_closed_by_server());

    // The same exports over --nbd-open and over the unix socket: everything.
    let open = TestServer::tcp_with(vec![disk("a"), disk("b")], true);
    assert_eq!(listed(&open.address), ["a", "b"]);
    let unix = TestServer::unix(vec![disk("a"), disk("b")]);
    assert_eq!(listed(&unix.address), ["a", "b"]);
}

#[test]
fn empty_name_is_the_only_export() {
    let server = TestServer::unix(vec![disk("only")]);
    let mut client = Client::connect(&server.address, "", Setup::FULL);
    client.verified_write_read(512, &pattern(1024, 3));
}

#[test]
fn export_name_legacy_path() {
    let target = disk("legacy");
    let server = TestServer::tcp(vec![Arc::clone(&target)]);
    for (client_flags, reply_len) in [(CLIENT_FLAGS_KNOWN, 10), (CLIENT_FLAG_FIXED_NEWSTYLE, 134)] {
        let mut client = Client::start(&server.address, client_flags);
        client.send_option(OPT_EXPORT_NAME, b"legacy");
        let reply = client.read_vec(reply_len);
        assert_eq!(&reply[0..8], &SIZE.to_be_bytes());
        let flags = u16::from_be_bytes([reply[8], reply[9]]);
        assert_eq!(flags & (TFLAG_HAS_FLAGS | TFLAG_SEND_DF), TFLAG_HAS_FLAGS);
        assert!(reply[10..].iter().all(|&b| b == 0));
        client.verified_write_read(0, &pattern(4096, 4));
    }
    assert_eq!(target.contents(0, 4096), pattern(4096, 4));
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_EXPORT_NAME, b"missing");
    assert!(client.is_closed_by_server());
}

#[test]
fn option_haggling_errors_and_unsupported_options() {
    let server = TestServer::tcp(vec![disk("v")]);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    for option in [OPT_STARTTLS, OPT_EXTENDED_HEADERS, 4, 99, 0xdead_beef] {
        client.send_option(option, &[]);
        assert_eq!(client.read_option_reply().0, option);
    }
    client.send_option(OPT_STARTTLS, &[]);
    assert_eq!(client.read_option_reply().1, REP_ERR_UNSUP);
    // SET_META_CONTEXT needs structured replies first.
    client.send_option(OPT_SET_META_CONTEXT, &meta_payload("v", &[BASE_ALLOCATION]));
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    // Malformed payloads.
    client.send_option(OPT_GO, &[0, 0, 0, 9, b'v']);
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    client.send_option(
        OPT_LIST_META_CONTEXT,
        &[0, 0, 0, 1, b'v', 0, 0, 0, 1, 0, 0, 0, 100],
    );
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    client.send_option(OPT_STRUCTURED_REPLY, b"x");
    assert_eq!(client.read_option_reply().1, REP_ERR_INVALID);
    // Too big but small enough to skip.
    client.send_option(OPT_INFO, &vec![0u8; 100 * 1024]);
    assert_eq!(client.read_option_reply().1, REP_ERR_TOO_BIG);
    // LIST_META_CONTEXT: everything, the namespace wildcard, unknown namespaces.
    for (queries, expect) in [
        (&[][..], true),
        (&["base:"][..], true),
        (&["base:allocation"][..], true),
        (&["qemu:dirty-bitmap:x", "base:nothing"][..], false),
    ] {
        client.send_option(OPT_LIST_META_CONTEXT, &meta_payload("v", queries));
        let mut reply = client.read_option_reply();
        if expect {
            assert_eq!(reply.1, REP_META_CONTEXT);
            assert_eq!(&reply.2[0..4], &0u32.to_be_bytes());
            assert_eq!(&reply.2[4..], BASE_ALLOCATION.as_bytes());
            reply = client.read_option_reply();
        }
        assert_eq!(reply.1, REP_ACK, "{queries:?}");
    }
    client.send_option(OPT_LIST_META_CONTEXT, &meta_payload("zzz", &[]));
    assert_eq!(client.read_option_reply().1, REP_ERR_UNKNOWN);
    // Meta context selected for another export does not carry over to GO.
    client.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(OPT_SET_META_CONTEXT, &meta_payload("", &[BASE_ALLOCATION]));
    assert_eq!(client.read_option_reply().1, REP_META_CONTEXT);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(OPT_GO, &info_payload("v", &[]));
    assert_eq!(client.read_info_replies().last().unwrap().0, REP_ACK);
    assert_eq!(client.call(0, BLOCK_STATUS, 0, 4096, &[]).error, 22);
    client.verified_write_read(0, &pattern(512, 5));

    // Oversized option: closed. Unknown client flags: closed. ABORT: ACK then closed.
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    let mut header = Vec::new();
    header.extend_from_slice(&IHAVEOPT.to_be_bytes());
    header.extend_from_slice(&OPT_GO.to_be_bytes());
    header.extend_from_slice(&u32::MAX.to_be_bytes());
    client.write(&header);
    assert!(client.is_closed_by_server());
    let mut client = Client::start(&server.address, 1 << 7);
    assert!(client.is_closed_by_server());
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_ABORT, &[]);
    assert_eq!(client.read_option_reply(), (OPT_ABORT, REP_ACK, vec![]));
    assert!(client.is_closed_by_server());
}

fn round_trips(server: &TestServer, target: &MemTarget) {
    let mut client = Client::connect(&server.address, "d", Setup::FULL);
    let data = pattern(65536, 9);
    assert_eq!(client.call(CMD_FLAG_FUA, WRITE, 0, 65536, &data).error, 0);
    let read = client.call(CMD_FLAG_DF, READ, 0, 65536, &[]);
    assert_eq!((read.error, read.chunk_type), (0, REPLY_TYPE_OFFSET_DATA));
    assert_eq!(read.data, data);
    let empty = client.call(0, READ, 4096, 0, &[]);
    assert_eq!(
        (empty.error, empty.chunk_type, empty.data.len()),
        (0, REPLY_TYPE_NONE, 0)
    );

    let flushes = target.flushes.load(Ordering::SeqCst);
    assert_eq!(client.call(0, FLUSH, 0, 0, &[]).error, 0);
    assert_eq!(target.flushes.load(Ordering::SeqCst), flushes + 1);
    assert_eq!(client.call(0, CACHE, 0, 8192, &[]).error, 0);
    assert_eq!(target.prefetches.load(Ordering::SeqCst), 1);

    // TRIM makes a hole; WRITE_ZEROES with NO_HOLE keeps the blocks allocated.
    assert_eq!(client.call(0, TRIM, 0, 8192, &[]).error, 0);
    assert_eq!(
        client
            .call(CMD_FLAG_NO_HOLE, WRITE_ZEROES, 8192, 8192, &[])
            .error,
        0
    );
    assert_eq!(client.call(0, WRITE_ZEROES, 16384, 4096, &[]).error, 0);
    assert_eq!(
        client
            .call(CMD_FLAG_FAST_ZERO, WRITE_ZEROES, 20480, 4096, &[])
            .error,
        0
    );
    let slow = client.call(
        CMD_FLAG_FAST_ZERO | CMD_FLAG_NO_HOLE,
        WRITE_ZEROES,
        0,
        4096,
        &[],
    );
    assert_eq!(slow.error, 95);
    let read = client.call(0, READ, 0, 32768, &[]);
    assert_eq!(&read.data[..24576], &vec![0u8; 24576][..]);
    assert_eq!(&read.data[24576..], &data[24576..32768]);
    let status = client.call(0, BLOCK_STATUS, 0, 65536, &[]);
    assert_eq!(
        status.status,
        vec![
            (8192, STATE_HOLE | STATE_ZERO),
            (8192, STATE_ZERO),
            (8192, STATE_HOLE | STATE_ZERO),
            (40960, 0)
        ]
    );
    let one = client.call(CMD_FLAG_REQ_ONE, BLOCK_STATUS, 4096, 65536, &[]);
    assert_eq!(one.status, vec![(4096, STATE_HOLE | STATE_ZERO)]);
    // The last descriptor never goes past the request.
    let part = client.call(0, BLOCK_STATUS, 0, 6144, &[]);
    assert_eq!(part.status, vec![(6144, STATE_HOLE | STATE_ZERO)]);
}

#[test]
fn commands_round_trip_over_tcp() {
    let target = disk("d");
    let server = TestServer::tcp(vec![Arc::clone(&target)]);
    round_trips(&server, &target);
}

#[test]
fn commands_round_trip_over_unix_socket() {
    let target = disk("d");
    let server = TestServer::unix(vec![Arc::clone(&target)]);
    round_trips(&server, &target);
}

#[test]
fn simple_replies_without_structured_negotiation() {
    let server = TestServer::tcp(vec![disk("s")]);
    let mut client = Client::connect(&server.address, "s", Setup::PLAIN);
    assert_eq!(client.flags & TFLAG_SEND_DF, 0);
    client.verified_write_read(1000, &pattern(777, 6));
    let read = client.call(0, READ, SIZE, 512, &[]);
    assert!(!read.structured);
    assert_eq!((read.error, read.data.len()), (22, 0));
    assert_eq!(client.call(CMD_FLAG_DF, READ, 0, 512, &[]).error, 22);
    assert_eq!(client.call(0, BLOCK_STATUS, 0, 512, &[]).error, 22);
}

#[test]
fn pipelined_requests_are_all_answered_once_out_of_order() {
    let mut target = MemTarget::new("p", SIZE, false);
    target.slow_read_offset = Some(0);
    let target = Arc::new(target);
    let server = TestServer::tcp(vec![Arc::clone(&target)]);
    let mut client = Client::connect(&server.address, "p", Setup::FULL);
    // Cookie 0 is a slow read; the others are writes then reads of distinct blocks.
    client.send(0, READ, 0, 0, 4096);
    for cookie in 1..32u64 {
        let offset = cookie * 4096;
        if cookie < 16 {
            client.send_with(0, WRITE, cookie, offset, 4096, &pattern(4096, cookie as u8));
        } else {
            client.send(0, READ, cookie, offset - 15 * 4096, 4096);
        }
    }
    let mut seen = Vec::new();
    for _ in 0..32 {
        let reply = client.reply();
        assert_eq!(reply.error, 0, "cookie {}", reply.cookie);
        seen.push(reply.cookie);
        // The slow read goes on once another request was answered while it waited.
        target.release_slow_read.store(true, Ordering::Release);
    }
    assert_ne!(seen[0], 0, "the slow read should not be answered first");
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..32).collect::<Vec<_>>());
    for cookie in 1..16u64 {
        assert_eq!(
            target.contents(cookie * 4096, 4096),
            pattern(4096, cookie as u8)
        );
    }
}

#[test]
fn invalid_requests_get_the_exact_errno() {
    let server = TestServer::tcp(vec![disk("e"), Arc::new(MemTarget::new("ro", SIZE, true))]);
    let mut client = Client::connect(&server.address, "e", Setup::FULL);
    let cases: &[(u16, u16, u64, u32, u32)] = &[
        // (flags, command, offset, length, errno)
        (0, 42, 0, 512, 22),
        (1 << 9, READ, 0, 512, 22),
        (CMD_FLAG_FAST_ZERO, WRITE, 0, 0, 22),
        (CMD_FLAG_NO_HOLE, TRIM, 0, 512, 22),
        (CMD_FLAG_REQ_ONE, READ, 0, 512, 22),
        (CMD_FLAG_DF, BLOCK_STATUS, 0, 512, 22),
        (0, READ, SIZE - 512, 1024, 22),
        (0, READ, u64::MAX - 100, 512, 22),
        (0, WRITE, SIZE, 0, 0),
        (0, WRITE, SIZE + 512, 0, 28),
        (0, TRIM, SIZE - 512, 1024, 22),
        (0, CACHE, SIZE, 512, 22),
        (0, WRITE_ZEROES, SIZE - 512, 1024, 28),
        (0, WRITE_ZEROES, u64::MAX - 511, 1024, 28),
        (0, BLOCK_STATUS, SIZE, 512, 22),
        (0, BLOCK_STATUS, 0, 0, 22),
        (0, READ, 0, TEST_MAX_PAYLOAD + 512, 22),
        (0, READ, 100, 512, 22),
        (0, TRIM, 0, 100, 22),
        (0, READ, 0, 0, 0),
    ];
    for &(flags, command, offset, len, errno) in cases {
        let reply = client.call(flags, command, offset, len, &[]);
        assert_eq!(
            reply.error, errno,
            "flags {flags:#x} cmd {command} {offset}+{len}"
        );
        if errno != 0 {
            assert!(reply.structured && !reply.message.is_empty());
        }
    }
    // Misaligned or past-the-end writes: the payload is consumed, the stream stays in sync.
    assert_eq!(client.call(0, WRITE, 100, 512, &[1; 512]).error, 22);
    assert_eq!(
        client.call(0, WRITE, SIZE - 512, 1024, &[1; 1024]).error,
        28
    );
    let big = vec![7u8; TEST_MAX_PAYLOAD as usize + 4096];
    assert_eq!(client.call(0, WRITE, 0, big.len() as u32, &big).error, 22);
    client.verified_write_read(0, &pattern(4096, 8));

    // Without block sizes negotiated, any alignment is fine.
    let mut loose = Client::connect(
        &server.address,
        "e",
        Setup {
            block_size: false,
            ..Setup::FULL
        },
    );
    loose.verified_write_read(3, &pattern(5, 9));

    let mut ro = Client::connect(&server.address, "ro", Setup::FULL);
    assert_ne!(ro.flags & TFLAG_READ_ONLY, 0);
    assert_eq!(ro.flags & (TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES), 0);
    assert_eq!(ro.call(0, WRITE, 0, 512, &[1; 512]).error, 1);
    assert_eq!(ro.call(0, TRIM, 0, 512, &[]).error, 1);
    assert_eq!(ro.call(0, WRITE_ZEROES, 0, 512, &[]).error, 1);
    assert_eq!(ro.call(0, READ, 0, 512, &[]).error, 0);
    assert_eq!(ro.call(0, FLUSH, 0, 0, &[]).error, 0);
}

#[test]
fn export_errors_map_to_errno() {
    let mut target = MemTarget::new("m", SIZE, false);
    target.bad_offset = Some(8192);
    let server = TestServer::tcp(vec![Arc::new(target)]);
    let mut client = Client::connect(&server.address, "m", Setup::FULL);
    let reply = client.call(0, READ, 8192, 512, &[]);
    assert_eq!(reply.error, 5);
    assert!(reply.message.contains("media error"), "{}", reply.message);
    assert_eq!(client.call(0, WRITE, 8192, 512, &[0; 512]).error, 5);

    let oor = IoError::OutOfRange {
        offset: 0,
        len: 1,
        size: 0,
    };
    assert_eq!(nbd_errno(&oor, Command::Read), Errno::EINVAL);
    assert_eq!(nbd_errno(&oor, Command::Trim), Errno::EINVAL);
    assert_eq!(nbd_errno(&oor, Command::Write), Errno::ENOSPC);
    assert_eq!(nbd_errno(&oor, Command::WriteZeroes), Errno::ENOSPC);
    let pool = IoError::NoSpace { pool: "p".into() };
    assert_eq!(nbd_errno(&pool, Command::Write), Errno::ENOSPC);
    let ro = IoError::ReadOnly { volume: "v".into() };
    assert_eq!(nbd_errno(&ro, Command::Write), Errno::EPERM);
    let gone = IoError::VolumeGone { volume: "v".into() };
    assert_eq!(nbd_errno(&gone, Command::Read), Errno::ESHUTDOWN);
    assert_eq!(
        nbd_errno(&IoError::ShuttingDown, Command::Flush),
        Errno::ESHUTDOWN
    );
    assert_eq!(
        nbd_errno(&IoError::NotFast, Command::WriteZeroes),
        Errno::ENOTSUP
    );
}

#[test]
fn broken_stream_closes_only_its_connection() {
    let server = TestServer::tcp(vec![disk("x")]);
    let mut healthy = Client::connect(&server.address, "x", Setup::FULL);
    let mut broken = Client::connect(&server.address, "x", Setup::PLAIN);
    broken.write(&[0x11; 28]);
    assert!(broken.is_closed_by_server());
    // An unknown command that claims a payload cannot be skipped: closed too.
    let mut broken = Client::connect(&server.address, "x", Setup::FULL);
    broken.send(CMD_FLAG_PAYLOAD_LEN, 99, 1, 0, 512);
    assert!(broken.is_closed_by_server());
    healthy.verified_write_read(0, &pattern(4096, 10));
}

#[test]
fn shutdown_closes_connections_and_stops_the_server() {
    let mut server = TestServer::tcp(vec![disk("z")]);
    let mut idle = Client::connect(&server.address, "z", Setup::FULL);
    let mut haggling = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    idle.verified_write_read(0, &pattern(512, 11));
    let started = Instant::now();
    server.stop();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(idle.is_closed_by_server());
    assert!(haggling.is_closed_by_server());
}

#[test]
fn config_is_sanitized() {
    let odd = NbdConfig {
        workers_per_connection: 0,
        max_payload: 1000,
        min_block: 3,
        preferred_block: 100,
        ..NbdConfig::default()
    }
    .sanitized();
    assert_eq!(odd.workers_per_connection, 1);
    assert_eq!((odd.min_block, odd.preferred_block), (4, 512));
    assert_eq!(odd.max_payload, 1000);
    assert_eq!(NbdConfig::default().sanitized(), NbdConfig::default());
}

/// One malformed session: bytes a broken or hostile client might send.
fn hostile_session(rng: &mut SeededRng, address: &Address) {
    let mut client = Client::open(address);
    let kind = rng.below(10);
    if kind == 0 {
        let garbage = rng.bytes_below(300);
        client.write_lossy(&garbage);
        assert!(client.drains_to_eof());
        return;
    }
    client.read_vec(18);
    let flags = if kind == 1 {
        rng.next() as u32
    } else {
        CLIENT_FLAGS_KNOWN
    };
    client.write_lossy(&flags.to_be_bytes());
    if kind <= 4 {
        // Option haggling abuse.
        for _ in 0..rng.below(4) + 1 {
            let magic = if rng.below(8) == 0 {
                rng.next()
            } else {
                IHAVEOPT
            };
            let option = if rng.below(2) == 0 {
                rng.below(14) as u32
            } else {
                rng.next() as u32
            };
            let payload = match rng.below(4) {
                0 => rng.bytes_below(64),
                1 => info_payload("h", &[rng.below(5) as u16, rng.next() as u16]),
                2 => meta_payload("h", &["base:", "x:y", "nocolon"][..rng.below(4) as usize]),
                _ => {
                    let mut p = rng.bytes_below(40);
                    p.truncate(rng.below(p.len() as u64 + 1) as usize);
                    p
                }
            };
            let claimed = match rng.below(6) {
                0 => rng.next() as u32,
                1 => payload.len() as u32 + rng.below(100) as u32,
                _ => payload.len() as u32,
            };
            let mut msg = Vec::new();
            msg.extend_from_slice(&magic.to_be_bytes());
            msg.extend_from_slice(&option.to_be_bytes());
            msg.extend_from_slice(&claimed.to_be_bytes());
            msg.extend_from_slice(&payload);
            client.write_lossy(&msg);
        }
        assert!(client.drains_to_eof());
        return;
    }
    // Transmission abuse after a valid GO.
    if rng.below(2) == 0 {
        client.send_option(OPT_STRUCTURED_REPLY, &[]);
        client.read_option_reply();
    }
    client.send_option(OPT_GO, &info_payload("h", &[INFO_BLOCK_SIZE]));
    client.read_info_replies();
    for _ in 0..rng.below(6) + 1 {
        let mut header = request_bytes(
            rng.next() as u16 & 0x3f,
            rng.below(10) as u16,
            rng.next(),
            match rng.below(4) {
                0 => rng.next(),
                1 => SIZE - rng.below(8192),
                _ => rng.below(SIZE),
            },
            match rng.below(4) {
                0 => rng.next() as u32,
                1 => rng.below(2 * TEST_MAX_PAYLOAD as u64) as u32,
                _ => rng.below(8192) as u32,
            },
        );
        if rng.below(10) == 0 {
            header[0] ^= 0xff;
        }
        let cut = if rng.below(8) == 0 {
            rng.below(28) as usize
        } else {
            28
        };
        client.write_lossy(&header[..cut]);
        if header[7] == WRITE as u8 && rng.below(3) == 0 {
            let payload = rng.bytes_below(9000);
            client.write_lossy(&payload);
        }
    }
    assert!(client.drains_to_eof());
}

#[test]
fn hostile_input_never_hurts_a_healthy_connection() {
    let target = Arc::new(MemTarget::new("h", SIZE, false));
    let server = TestServer::tcp(vec![Arc::clone(&target)]);
    let mut healthy = Client::connect(&server.address, "h", Setup::FULL);
    let mut rng = SeededRng::new(0x5eed_1234);
    for case in 0..1200u64 {
        hostile_session(&mut rng, &server.address);
        if case % 10 == 0 {
            // Hostile writes land anywhere in the export; the healthy one checks its own
            // write immediately.
            healthy.verified_write_read((case % 200) * 4096, &pattern(4096, case as u8));
        }
    }
    let mut fresh = Client::connect(&server.address, "h", Setup::FULL);
    fresh.verified_write_read(0, &pattern(4096, 12));
    healthy.verified_write_read(4096, &pattern(4096, 13));
}

fn negotiated() -> impl Strategy<Value = Negotiated> {
    (any::<u64>(), any::<[bool; 4]>(), 0u32..=12, any::<u32>()).prop_map(
        |(size, [read_only, structured, base_allocation, block_size], shift, max_payload)| {
            Negotiated {
                size,
                read_only,
                structured,
                base_allocation,
                changed: false,
                block_size_negotiated: block_size,
                min_block: 1 << shift,
                max_payload,
            }
        },
    )
}

proptest! {
    #[test]
    fn request_parser_never_panics(bytes in any::<[u8; 28]>(), n in negotiated()) {
        if let Ok(request) = parse_request(&bytes) {
            let _ = validate_request(&request, &n);
            prop_assert_eq!(&bytes[0..4], &REQUEST_MAGIC.to_be_bytes());
        }
    }

    #[test]
    fn valid_requests_stay_in_range(
        offset in any::<u64>(), length in any::<u32>(), command in 0u16..8, n in negotiated()
    ) {
        let header = request_bytes(0, command, 1, offset, length);
        let request = parse_request(&header).expect("known command");
        if validate_request(&request, &n).is_ok() && !matches!(request.command, Command::Flush | Command::Disc) {
            prop_assert!(offset + u64::from(length) <= n.size);
            if matches!(request.command, Command::Read | Command::Write) {
                prop_assert!(length <= n.max_payload);
            }
        }
    }

    #[test]
    fn option_parser_never_panics(option in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_option(option, &data);
        let _ = parse_option(option % 12, &data);
    }

    #[test]
    fn block_status_encoding_is_well_formed(
        len in 1u32..100_000,
        req_one in any::<bool>(),
        extents in proptest::collection::vec((0u64..20_000, any::<bool>(), any::<bool>()), 0..64)
    ) {
        let extents: Vec<Extent> = extents
            .into_iter()
            .map(|(length, hole, zero)| Extent { length, hole, zero })
            .collect();
        let mut out = Vec::new();
        encode_block_status(5, len, req_one, &extents, &mut out);
        prop_assert_eq!(u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize, out.len() - 20);
        let descriptors: Vec<(u32, u32)> = out[24..]
            .chunks_exact(8)
            .map(|d| (u32::from_be_bytes(d[0..4].try_into().unwrap()), u32::from_be_bytes(d[4..8].try_into().unwrap())))
            .collect();
        prop_assert!(!descriptors.is_empty());
        prop_assert!(!req_one || descriptors.len() == 1);
        prop_assert!(descriptors.iter().all(|&(l, _)| l > 0));
        prop_assert!(descriptors.windows(2).all(|w| w[0].1 != w[1].1));
        prop_assert!(descriptors.iter().map(|&(l, _)| u64::from(l)).sum::<u64>() <= u64::from(len));
    }
}

#[test]
fn changed_block_contexts_parse_by_base_name() {
    use super::proto::{MetaContextQuery, OptionRequest, parse_option};
    let payload = meta_payload("vol1", &[BASE_ALLOCATION, "troika:changed:snap-1"]);
    match parse_option(OPT_SET_META_CONTEXT, &payload) {
        Ok(OptionRequest::SetMetaContext(MetaContextQuery {
            export: "vol1",
            base_allocation: true,
            changed: Some("snap-1"),
        })) => {}
        other => panic!("unexpected parse: {other:?}"),
    }
    // An empty base names nothing; other troika leaves are ignored.
    let payload = meta_payload("vol1", &["troika:changed:", "troika:other"]);
    match parse_option(OPT_SET_META_CONTEXT, &payload) {
        Ok(OptionRequest::SetMetaContext(query)) => {
            assert_eq!((query.base_allocation, query.changed), (false, None));
        }
        other => panic!("unexpected parse: {other:?}"),
    }
}

#[test]
fn a_changed_context_the_export_cannot_serve_is_left_out() {
    // The test disk belongs to no family: the context is not selected, the ACK still comes.
    let server = TestServer::tcp(vec![disk("vol1")]);
    let mut client = Client::start(&server.address, CLIENT_FLAGS_KNOWN);
    client.send_option(OPT_STRUCTURED_REPLY, &[]);
    assert_eq!(client.read_option_reply().1, REP_ACK);
    client.send_option(
        OPT_SET_META_CONTEXT,
        &meta_payload("vol1", &["troika:changed:snap"]),
    );
    assert_eq!(client.read_option_reply().1, REP_ACK);
}
