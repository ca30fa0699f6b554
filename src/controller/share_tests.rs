//! Copies by reference through the controllers: blocks still in cache are copied as bytes,
//! destaged ones are shared; a destination written before the copy is superseded; the
//! source changing later leaves the copy alone; and the cleaner, which knows a block only
//! by the address it was written for, moves a block that lives on only at the address it
//! was shared to.

use std::sync::Arc;

use super::*;

const VOLUME_SIZE: u64 = 16 << 20;
const BLOCK: u64 = BLOCK_SIZE as u64;

struct Rig {
    _dir: tempfile::TempDir,
    cache: Arc<Cache>,
    _controllers: Arc<Controllers>,
    volume: Arc<dyn BlockTarget>,
    other_port: Arc<dyn BlockTarget>,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (cache, controllers) = super::tests::small_node(dir.path(), 96 << 20, VOLUME_SIZE);
    let ids = controllers.ids().to_vec();
    let volume = controllers.open_export_on("v", ids[0]).unwrap();
    let other_port = controllers.open_export_on("v", ids[1]).unwrap();
    Rig {
        _dir: dir,
        cache,
        _controllers: controllers,
        volume,
        other_port,
    }
}

/// Block `lba`'s bytes in version `version`.
fn pattern(lba: u64, version: u8) -> Vec<u8> {
    let mut block = vec![version; BLOCK_SIZE];
    block[..8].copy_from_slice(&lba.to_le_bytes());
    block
}

fn write_blocks(target: &dyn BlockTarget, first: u64, count: u64, version: u8) {
    let mut data = Vec::with_capacity((count * BLOCK) as usize);
    for lba in first..first + count {
        data.extend_from_slice(&pattern(lba, version));
    }
    target.write(first * BLOCK, &data, false).unwrap();
}

fn read_block(target: &dyn BlockTarget, lba: u64) -> Vec<u8> {
    let mut block = vec![0; BLOCK_SIZE];
    target.read(lba * BLOCK, &mut block).unwrap();
    block
}

#[test]
fn destaged_blocks_are_shared_and_cached_ones_copied() {
    let rig = rig();
    write_blocks(&*rig.volume, 0, 256, 1);
    rig.cache.destage_all(64).unwrap();
    let allocated = rig.cache.meta().state().alloc.live_blocks();
    // Blocks 0..16 change again and stay in cache; the destination was written before
    // the copy (still in cache): the copy supersedes it.
    write_blocks(&*rig.volume, 0, 16, 2);
    write_blocks(&*rig.volume, 2048, 256, 9);
    let outcome = rig
        .other_port
        .copy_by_reference(&*rig.volume, 0, 2048 * BLOCK, 256 * BLOCK)
        .unwrap()
        .expect("one volume shares its own blocks");
    assert_eq!(outcome.copied, 16, "{outcome:?}");
    assert_eq!(outcome.shared, 240, "{outcome:?}");
    for lba in 0..256 {
        let version = if lba < 16 { 2 } else { 1 };
        assert!(
            read_block(&*rig.volume, 2048 + lba) == pattern(lba, version),
            "block {} after the copy",
            2048 + lba
        );
    }
    rig.cache.destage_all(64).unwrap();
    // Only the 16 blocks copied as bytes took space (the 16 rewritten source blocks
    // replaced blocks no one else refers to); the superseded destination writes never
    // reached the array.
    let after = rig.cache.meta().state().alloc.live_blocks();
    assert_eq!(after, allocated + 16, "live blocks {allocated} -> {after}");
    // The source changing later does not change the copy.
    write_blocks(&*rig.volume, 0, 256, 3);
    rig.cache.destage_all(64).unwrap();
    for lba in 0..256 {
        let version = if lba < 16 { 2 } else { 1 };
        assert!(read_block(&*rig.other_port, 2048 + lba) == pattern(lba, version));
    }
}

#[test]
fn unmapped_source_blocks_release_the_destination() {
    let rig = rig();
    write_blocks(&*rig.volume, 100, 50, 4);
    rig.cache.destage_all(64).unwrap();
    let outcome = rig
        .volume
        .copy_by_reference(&*rig.volume, 1000 * BLOCK, 100 * BLOCK, 50 * BLOCK)
        .unwrap()
        .unwrap();
    assert_eq!(outcome.released, 50, "{outcome:?}");
    assert!(read_block(&*rig.volume, 120).iter().all(|byte| *byte == 0));
    assert!(
        rig.volume
            .copy_by_reference(&*rig.volume, 0, 4096, 8192)
            .unwrap()
            .is_none()
    );
    assert!(
        rig.volume
            .copy_by_reference(&*rig.volume, 0, 512, 4096)
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_cleaner_moves_blocks_that_live_on_only_where_they_were_shared_to() {
    let rig = rig();
    // Fill some segments, share ten blocks of the first to another address, then
    // overwrite every source block: the first segment keeps only the shared blocks live,
    // known to its summary by addresses that no longer name them.
    write_blocks(&*rig.volume, 0, 512, 1);
    rig.cache.destage_all(64).unwrap();
    let outcome = rig
        .volume
        .copy_by_reference(&*rig.volume, 10 * BLOCK, 3000 * BLOCK, 10 * BLOCK)
        .unwrap()
        .unwrap();
    assert_eq!(outcome.shared, 10);
    write_blocks(&*rig.volume, 0, 512, 2);
    rig.cache.destage_all(64).unwrap();
    let meta = rig.cache.meta().clone();
    let volume_id = meta.state().catalog.volume_by_name("v").unwrap().id;
    let phys_before: Vec<u64> = (3000..3010)
        .map(|lba| meta.lookup(volume_id, lba).unwrap().phys)
        .collect();
    // Clean until those blocks have moved (each pass cleans the emptiest segment).
    for _ in 0..64 {
        let moved = (3000..3010)
            .all(|lba| !phys_before.contains(&meta.lookup(volume_id, lba).unwrap().phys));
        if moved {
            break;
        }
        assert!(rig.cache.clean_now().unwrap(), "nothing left to clean");
    }
    for (index, lba) in (3000..3010).enumerate() {
        assert_ne!(
            meta.lookup(volume_id, lba).unwrap().phys,
            phys_before[index]
        );
    }
    // Write well over the array's size so freed segments are reused, then read the
    // copies back.
    for round in 0..40u8 {
        write_blocks(&*rig.volume, 0, 1024, 10 + round);
        rig.cache.destage_all(64).unwrap();
    }
    for lba in 3000..3010 {
        assert!(
            read_block(&*rig.other_port, lba) == pattern(lba - 2990, 1),
            "block {lba} after cleaning"
        );
    }
}
