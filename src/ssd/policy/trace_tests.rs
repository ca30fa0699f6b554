//! Trace files and the generator: formats parse, hostile lines are refused with the line
//! named, and a generated trace is deterministic and survives a round trip through a file.

use super::trace_files::{TraceFormat, read_trace, write_plain};
use super::traces::{Mix, Request, TraceSpec, generate};

#[test]
fn msr_lines_parse_with_the_disk_in_the_key() {
    let text = "128166372003061629,hm,0,Read,7014609920,24576,41286\n\
                128166372016382155,hm,1,Write,4096,4096,1963\n";
    let (format, trace) = read_trace(text.as_bytes(), "msr", usize::MAX).unwrap();
    assert_eq!(format, TraceFormat::Msr);
    assert_eq!(trace.len(), 2);
    // 24 KiB from an offset a quarter into block 1712551 touches 7 blocks.
    assert_eq!(trace[0].blocks(), 1712551..1712558);
    assert!(!trace[0].write);
    assert!(trace[1].write);
    assert_eq!(trace[1].offset, (1 << 50) + 4096, "disk 1 has its own keys");
}

#[test]
fn plain_lines_parse_after_a_header_and_partial_blocks_round_out() {
    let text = "timestamp,offset,size,op\n0,6144,4096,R\n\n1,0,512,write\n2,8192,0,r\n";
    let (format, trace) = read_trace(text.as_bytes(), "plain", usize::MAX).unwrap();
    assert_eq!(format, TraceFormat::Plain);
    assert_eq!(trace.len(), 3);
    assert_eq!(
        trace[0].blocks(),
        1..3,
        "bytes 6144..10240 touch blocks 1 and 2"
    );
    assert_eq!(trace[1].blocks(), 0..1);
    assert!(trace[1].write);
    assert!(trace[2].blocks().is_empty());
    let (_, limited) = read_trace(text.as_bytes(), "plain", 2).unwrap();
    assert_eq!(limited.len(), 2);
}

#[test]
fn hostile_lines_are_refused_naming_the_line() {
    for (text, wanted) in [
        ("0,0,4096,R\n1,0,4096,X\n", "line 2: operation \"x\""),
        ("0,0,4096,R\n1,-5,4096,R\n", "line 2: offset"),
        (
            "0,0,4096,R\n1,0,99999999999,R\n",
            "line 2: size 99999999999",
        ),
        ("0,0,4096,R\n1,0,4096\n", "line 2: 3 fields"),
        ("0,18446744073709551615,4096,R\n", "line 1: offset"),
        ("a,b\n", "line 1 has 2 fields"),
        ("timestamp,offset,size,op\n", "no requests"),
        ("", "no requests"),
    ] {
        let error = read_trace(text.as_bytes(), "t.csv", usize::MAX).unwrap_err();
        assert!(error.contains(wanted), "{text:?}: {error}");
        assert!(error.starts_with("t.csv"), "{error}");
    }
}

#[test]
fn generated_traces_are_deterministic_and_round_trip_through_a_file() {
    for mix in Mix::standard() {
        let spec = TraceSpec {
            mix,
            requests: 5_000,
            universe: 2_000,
            seed: 9,
        };
        let trace = generate(&spec);
        assert_eq!(trace.len(), 5_000, "{mix}");
        assert_eq!(trace, generate(&spec), "{mix}: same seed, same trace");
        let other = generate(&TraceSpec { seed: 10, ..spec });
        assert_ne!(trace, other, "{mix}: another seed, another trace");
        let mut file = Vec::new();
        write_plain(&mut file, &trace).unwrap();
        let (_, back) = read_trace(file.as_slice(), "generated", usize::MAX).unwrap();
        assert_eq!(back, trace, "{mix}");
        assert_eq!(mix.to_string().parse::<Mix>(), Ok(mix));
    }
    let writes = generate(&TraceSpec {
        mix: Mix::ReadWrite,
        requests: 10_000,
        universe: 1_000,
        seed: 1,
    })
    .iter()
    .filter(|request: &&Request| request.write)
    .count();
    assert!(
        (2_000..3_000).contains(&writes),
        "{writes} writes of 10,000"
    );
    assert!("zipf-x".parse::<Mix>().is_err());
}
