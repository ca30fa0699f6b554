//! NBD request headers: parse 28 bytes, then validate against a negotiated state taken
//! from the rest of the input. Accepted requests must lie inside the export.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troika::target::nbd::proto::{self, Command, Negotiated};

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<{ proto::REQUEST_HEADER_LEN }>() else {
        return;
    };
    let Ok(request) = proto::parse_request(header) else {
        return;
    };
    let mut state = [0u8; 14];
    let n = rest.len().min(state.len());
    state[..n].copy_from_slice(&rest[..n]);
    let negotiated = Negotiated {
        size: u64::from_be_bytes(state[0..8].try_into().unwrap()),
        read_only: state[8] & 1 != 0,
        structured: state[8] & 2 != 0,
        base_allocation: state[8] & 4 != 0,
        changed: state[13] & 1 != 0,
        block_size_negotiated: state[8] & 8 != 0,
        min_block: 1 << (state[8] >> 4).min(12),
        max_payload: u32::from_be_bytes(state[9..13].try_into().unwrap()),
    };
    if proto::validate_request(&request, &negotiated).is_ok()
        && !matches!(request.command, Command::Flush | Command::Disc)
    {
        let end = request.offset.checked_add(u64::from(request.length));
        assert!(end.is_some_and(|end| end <= negotiated.size));
    }
});
