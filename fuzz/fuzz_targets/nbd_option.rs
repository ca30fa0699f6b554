//! NBD option parsing: any option code with any payload must parse or be refused, never
//! panic. Input: 4 bytes of option code, then the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troika::target::nbd::proto;

fuzz_target!(|data: &[u8]| {
    if let Some((code, payload)) = data.split_first_chunk::<4>() {
        let option = u32::from_be_bytes(*code);
        // Bias half the inputs towards the options we implement.
        let _ = proto::parse_option(option, payload);
        let _ = proto::parse_option(option % 12, payload);
    }
    if let Some(header) = data.first_chunk::<{ proto::OPTION_HEADER_LEN }>() {
        let _ = proto::parse_option_header(header);
    }
});
