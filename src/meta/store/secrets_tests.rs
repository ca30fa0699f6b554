//! Secrets at rest in the store: CHAP secrets never reach the vault device plain, a vault
//! sealed with another key is refused, and a vault of format 1 (plain secrets) is read
//! and rewritten sealed at open.

use std::sync::Arc;

use super::*;
use crate::meta::{ChapMethod, ChapSettings, HostPort, HostRecord, PortKind};
use crate::secrets::NodeKey;
use crate::testing::{open_small_store, open_small_store_with_report, test_key};

const INBOUND: &str = "Inbound-Secr3t!Z";
const OUTBOUND: &str = "Outbound-S3cret#";

fn chap_host() -> HostRecord {
    HostRecord {
        id: 0,
        name: "h".into(),
        ports: vec![HostPort {
            kind: PortKind::Iscsi,
            address: "iqn.2000-01.com.example:h".into(),
        }],
        chap: ChapSettings {
            method: ChapMethod::MutualChap,
            inbound_user: "in".into(),
            inbound_secret: INBOUND.into(),
            outbound_user: "out".into(),
            outbound_secret: OUTBOUND.into(),
        },
        cluster_id: None,
        host_type: "default".into(),
        optimized: true,
        created_at: 0,
        updated_at: 0,
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn ssd_bytes(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("ssd0.img")).unwrap()
}

fn secrets_of(meta: &MetaStore) -> (String, String) {
    let state = meta.state();
    let host = state.catalog.host_by_name("h").expect("the host survived");
    (
        host.chap.inbound_secret.clone(),
        host.chap.outbound_secret.clone(),
    )
}

/// The secrets go to the journal and to both checkpoint slots sealed, come back after a
/// crash (replay) and after checkpoints, and another key is refused by name.
#[test]
fn secrets_reach_the_vault_only_sealed_and_need_the_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (meta, _) = open_small_store(dir.path());
        meta.save_host(chap_host()).unwrap();
    }
    let (meta, _) = open_small_store(dir.path());
    assert_eq!(secrets_of(&meta), (INBOUND.into(), OUTBOUND.into()));
    meta.checkpoint(|| u64::MAX).unwrap();
    meta.checkpoint(|| u64::MAX).unwrap();
    drop(meta);
    let bytes = ssd_bytes(dir.path());
    assert!(contains(&bytes, "xc20p1:"), "nothing sealed was written");
    assert!(!contains(&bytes, INBOUND) && !contains(&bytes, OUTBOUND));

    let ssd = Device::open(&dir.path().join("ssd0.img"), None, None).unwrap();
    let drives = (0..6)
        .map(|index| {
            Device::open(&dir.path().join(format!("nlsas{index}.img")), None, None).unwrap()
        })
        .collect();
    let array = Array::straight(drives, 4, 64 << 10, 4);
    let other = Arc::new(NodeKey::from_bytes([0x77; 32]));
    match MetaStore::open(ssd, array, other) {
        Err(MetaError::WrongKey { recorded, .. }) => assert_eq!(recorded, test_key().id()),
        Err(other) => panic!("expected the wrong key to be named, got {other}"),
        Ok(_) => panic!("a vault sealed with another key opened"),
    }
    let (meta, _) = open_small_store(dir.path());
    assert_eq!(secrets_of(&meta), (INBOUND.into(), OUTBOUND.into()));
}

/// A vault of format 1 (superblock without a key, checkpoint with plain secrets) opens,
/// keeps its secrets, and leaves both checkpoint slots sealed under a format-2 superblock.
#[test]
fn a_plain_format_1_vault_is_rewritten_sealed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (meta, _) = open_small_store(dir.path());
        meta.save_host(chap_host()).unwrap();
        meta.checkpoint(|| u64::MAX).unwrap();
        meta.checkpoint(|| u64::MAX).unwrap();
        let ssd = Device::open(&dir.path().join("ssd0.img"), None, None).unwrap();
        crate::meta::checkpoint::rewrite_as_plain_format(&ssd, &test_key());
    }
    assert!(
        contains(&ssd_bytes(dir.path()), INBOUND),
        "the fixture is plain"
    );
    let (meta, _, report) = open_small_store_with_report(dir.path());
    assert!(report.sealed_plain_secrets);
    assert_eq!(secrets_of(&meta), (INBOUND.into(), OUTBOUND.into()));
    drop(meta);
    let bytes = ssd_bytes(dir.path());
    assert!(
        !contains(&bytes, INBOUND) && !contains(&bytes, OUTBOUND),
        "a plain secret is left on the vault device"
    );
    let (meta, _, report) = open_small_store_with_report(dir.path());
    assert!(!report.sealed_plain_secrets, "the migration happens once");
    assert_eq!(secrets_of(&meta), (INBOUND.into(), OUTBOUND.into()));
}
