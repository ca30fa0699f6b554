//! The node on real block devices: the vault SSD and the six NL-SAS drives are loop
//! devices, named by path in the hardware model. Needs root and losetup; skips otherwise.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::TestNode;
use common::nbd_client::NbdClient;

/// Loop devices over files in a temp dir, detached on drop.
struct Loops {
    devices: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Loops {
    fn create(sizes: &[u64]) -> Option<Loops> {
        let dir = tempfile::tempdir().ok()?;
        let mut loops = Loops {
            devices: Vec::new(),
            _dir: dir,
        };
        for (index, size) in sizes.iter().enumerate() {
            let file = loops._dir.path().join(format!("disk{index}.img"));
            std::fs::File::create(&file).ok()?.set_len(*size).ok()?;
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&file)
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!(
                    "skipped: losetup failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                return None;
            }
            loops
                .devices
                .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        Some(loops)
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for device in &self.devices {
            let _ = Command::new("losetup").args(["-d", device]).status();
        }
    }
}

#[test]
fn a_node_on_loop_devices_stores_and_recovers_data() {
    if !common::tools::present(&[&common::tools::LOSETUP]) {
        return;
    }
    let Some(loops) = Loops::create(&[
        256 << 20,
        128 << 20,
        128 << 20,
        128 << 20,
        128 << 20,
        128 << 20,
        128 << 20,
    ]) else {
        common::tools::skipped(
            "cannot create loop devices",
            "run the tests as root on a machine with /dev/loop-control",
        );
        return;
    };
    let model_dir = tempfile::tempdir().unwrap();
    let mut model = String::from(
        "name = \"troika-loop\"\ncontrollers = 3\ndram_per_controller = \"32M\"\n\
         [stripe]\ndata = 4\nparity = 2\nunit = \"64K\"\nrows_per_segment = 4\n",
    );
    model.push_str(&format!(
        "[[ssd]]\nname = \"ssd0\"\npath = \"{}\"\n",
        loops.devices[0]
    ));
    for (index, device) in loops.devices[1..].iter().enumerate() {
        model.push_str(&format!(
            "[[nlsas]]\nname = \"nlsas{index}\"\npath = \"{device}\"\n"
        ));
    }
    let model_path: PathBuf = model_dir.path().join("loop.toml");
    std::fs::write(&model_path, model).unwrap();

    let mut node = TestNode::start_with_model(model_path);
    node.pool_and_volume("pool", "200M", "vol", "64M");
    let mut client = NbdClient::connect(&node.nbd_socket(), "vol").unwrap();
    let data: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (index, chunk) in data.chunks(1 << 20).enumerate() {
        client.write((index as u64) << 20, chunk, 0).unwrap();
    }
    client.flush().unwrap();
    node.kill9();
    node.restart();
    let mut client = NbdClient::connect(&node.nbd_socket(), "vol").unwrap();
    let mut back = vec![0u8; 1 << 20];
    for (index, chunk) in data.chunks(1 << 20).enumerate() {
        client.read((index as u64) << 20, &mut back).unwrap();
        assert!(
            back == chunk,
            "MiB {index} differs after kill -9 on loop devices"
        );
    }
    node.stop();
}
