use super::*;

fn config() -> IscsiConfig {
    IscsiConfig::default()
}

fn run(key: &str, value: &str, discovery: bool) -> (Answer, Params) {
    let config = config();
    let mut params = Params::new(&config);
    let answer = negotiate(key, value, discovery, &mut params, &config);
    (answer, params)
}

fn value(s: &str) -> Answer {
    Answer::Value(s.to_owned())
}

#[test]
fn negotiation_table() {
    let cases: &[(&str, &str, &str)] = &[
        ("HeaderDigest", "None", "None"),
        ("HeaderDigest", "CRC32C,None", "CRC32C"),
        ("HeaderDigest", "None,CRC32C", "None"),
        ("DataDigest", "CRC32C", "CRC32C"),
        ("DataDigest", "MD5", "Reject"),
        ("HeaderDigest", "FOO,CRC32C", "CRC32C"),
        ("MaxConnections", "8", "1"),
        ("MaxConnections", "0", "Reject"),
        ("InitialR2T", "No", "No"),
        ("InitialR2T", "Yes", "Yes"),
        ("InitialR2T", "maybe", "Reject"),
        ("ImmediateData", "No", "No"),
        ("ImmediateData", "Yes", "Yes"),
        ("MaxBurstLength", "16777215", "1048576"),
        ("MaxBurstLength", "4096", "4096"),
        ("MaxBurstLength", "100", "Reject"),
        ("FirstBurstLength", "16777215", "262144"),
        ("FirstBurstLength", "8192", "8192"),
        ("DefaultTime2Wait", "0", "2"),
        ("DefaultTime2Wait", "5", "5"),
        ("DefaultTime2Retain", "0", "0"),
        ("DefaultTime2Retain", "60", "20"),
        ("MaxOutstandingR2T", "8", "1"),
        ("DataPDUInOrder", "No", "Yes"),
        ("DataSequenceInOrder", "No", "Yes"),
        ("ErrorRecoveryLevel", "2", "0"),
        ("ErrorRecoveryLevel", "9", "Reject"),
        ("IFMarker", "Yes", "No"),
        ("OFMarker", "No", "No"),
        ("OFMarkInt", "1~65535", "Irrelevant"),
        ("X-com.example.Opt", "1", "NotUnderstood"),
        ("Nonsense", "1", "NotUnderstood"),
        ("TargetAlias", "x", "Irrelevant"),
    ];
    for (key, offer, want) in cases {
        let (answer, _) = run(key, offer, false);
        assert_eq!(answer, value(want), "{key}={offer}");
    }
}

#[test]
fn declarative_and_discovery_keys() {
    let (answer, params) = run("MaxRecvDataSegmentLength", "4096", false);
    assert_eq!(answer, Answer::Silent);
    assert_eq!(params.initiator_max_recv, 4096);
    assert_eq!(
        run("MaxRecvDataSegmentLength", "10", false).0,
        value("Reject")
    );
    assert_eq!(
        run("MaxRecvDataSegmentLength", "0x1000", false)
            .1
            .initiator_max_recv,
        4096
    );
    assert_eq!(run("InitiatorAlias", "host", false).0, Answer::Silent);
    for key in [
        "ImmediateData",
        "InitialR2T",
        "MaxBurstLength",
        "FirstBurstLength",
        "MaxOutstandingR2T",
    ] {
        assert_eq!(run(key, "Yes", true).0, value("Irrelevant"), "{key}");
    }
    assert_eq!(run("HeaderDigest", "CRC32C", true).0, value("CRC32C"));
}

#[test]
fn results_land_in_params() {
    let config = config();
    let mut params = Params::new(&config);
    assert_eq!(
        (
            params.max_burst,
            params.first_burst,
            params.initiator_max_recv
        ),
        (262_144, 65_536, 8192)
    );
    negotiate("MaxBurstLength", "4096", false, &mut params, &config);
    negotiate("FirstBurstLength", "65536", false, &mut params, &config);
    assert_eq!(
        params.first_burst, 4096,
        "FirstBurstLength <= MaxBurstLength"
    );
    negotiate("HeaderDigest", "CRC32C", false, &mut params, &config);
    negotiate("InitialR2T", "No", false, &mut params, &config);
    assert!(params.header_digest && !params.initial_r2t);
}

#[test]
fn parsing_text() {
    assert_eq!(
        parse(b"A=1\0B=\0C=x=y\0").unwrap(),
        vec![
            ("A".into(), "1".into()),
            ("B".into(), "".into()),
            ("C".into(), "x=y".into())
        ]
    );
    assert!(parse(b"novalue\0").is_err());
    assert!(parse(b"=1\0").is_err());
    assert!(parse(&[b'K', b'=', 0xff, 0]).is_err());
    let long_key = format!("{}=1\0", "k".repeat(64));
    assert!(parse(long_key.as_bytes()).is_err());
    let many: String = (0..300).map(|i| format!("K{i}=1\0")).collect();
    assert!(parse(many.as_bytes()).is_err());
    assert!(parse(b"").unwrap().is_empty());
}
