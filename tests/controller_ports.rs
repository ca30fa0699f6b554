//! Every controller has its own NBD port and any port serves any volume: data written
//! through controller 1's port reads back identically through controllers 2 and 3, and each
//! controller's metrics count what came through its port.

mod common;

use std::process::Command;

use common::{TestNode, ci_model};

fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn any_controller_port_serves_any_volume() {
    if !common::tools::present(&[&common::tools::NBDCOPY]) {
        return;
    }
    let mut node = TestNode::start_with_nbd_ports(ci_model(), 3);
    node.pool_and_volume("p", "64M", "shared", "8M");
    let image = node.data().join("image.bin");
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&image, &data).unwrap();
    let uri = |port: u16| format!("nbd://127.0.0.1:{port}/shared");

    let write = Command::new("nbdcopy")
        .arg("--flush")
        .arg(&image)
        .arg(uri(node.nbd_ports[0]))
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    for port in &node.nbd_ports[1..] {
        let read = Command::new("nbdcopy")
            .arg(uri(*port))
            .arg("-")
            .output()
            .unwrap();
        assert!(
            read.status.success(),
            "{}",
            String::from_utf8_lossy(&read.stderr)
        );
        assert!(read.stdout == data, "port {port} read back different data");
    }

    let (status, text) = node.http_get("/metrics");
    assert_eq!(status, 200);
    assert!(
        metric(&text, "troika_controller_write_ops_total{controller=\"1\"}") > 0.0,
        "{text}"
    );
    for controller in ["2", "3"] {
        let reads = format!("troika_controller_read_ops_total{{controller=\"{controller}\"}}");
        assert!(metric(&text, &reads) > 0.0, "{reads} is 0:\n{text}");
        let writes = format!("troika_controller_write_ops_total{{controller=\"{controller}\"}}");
        assert_eq!(metric(&text, &writes), 0.0, "{writes}");
    }
    node.stop();
}
