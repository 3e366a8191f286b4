use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

/// `buf lint` with the project's buf.yaml: naming, enum zero values, and a
/// comment on every service, RPC, message, field and enum value.
#[test]
fn protos_pass_buf_lint() -> Result<()> {
    let buf = ctrl_testkit::paths::buf_bin()?;
    let proto = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let out = Command::new(&buf)
        .arg("lint")
        .current_dir(&proto)
        .output()
        .with_context(|| format!("run {}", buf.display()))?;
    assert!(
        out.status.success(),
        "buf lint failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
