//! Generates the BuildKit client and the session services it serves (and
//! the daemon side, for the testkit's Depot machine) from the trimmed
//! BuildKit protos in `proto/`, with a vendored protoc. Only with the
//! `backends` feature: the context code needs no codegen.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("CARGO_FEATURE_BACKENDS").is_none() {
        return Ok(());
    }
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = PathBuf::from(manifest_dir).join("proto");
    println!("cargo:rerun-if-changed={}", proto_dir.display());
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded; nothing reads the
    // environment concurrently.
    #[allow(unsafe_code, clippy::disallowed_methods)]
    unsafe {
        std::env::set_var("PROTOC", &protoc);
    }
    let files = [
        "buildkit.proto",
        "secrets.proto",
        "auth.proto",
        "health.proto",
    ]
    .map(|f| proto_dir.join(f));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&files, &[proto_dir])?;
    Ok(())
}
