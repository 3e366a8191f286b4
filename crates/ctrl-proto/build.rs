//! Generates the ctrl.v1 code from `proto/` with a vendored protoc, so no
//! protoc has to be installed: prost messages, pbjson serde (Connect JSON),
//! Connect handlers and client, and tonic server and client stubs. Also
//! writes the file descriptor set (for reflection) and a macro listing every
//! message type (for exhaustive tests).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use heck::ToUpperCamelCase;
use prost::Message as _;
use prost_types::FileDescriptorSet;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary can be reused by a checkout
    // at another path sharing the target directory.
    let manifest_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_root = PathBuf::from(manifest_dir).join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", proto_root.display());

    // prost-build and tonic-prost-build both find protoc through $PROTOC.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded; nothing reads the
    // environment concurrently.
    #[allow(unsafe_code, clippy::disallowed_methods)]
    unsafe {
        std::env::set_var("PROTOC", &protoc);
    }

    connectrpc_axum_build::compile_dir(&proto_root)
        .with_tonic()
        .with_tonic_client()
        .with_connect_client()
        .include_file("ctrl_proto.rs")
        .compile()?;

    let descriptor = out_dir.join("ctrl_v1_descriptor.bin");
    let protos = proto_files(&proto_root.join("ctrl/v1"))?;
    let status = Command::new(&protoc)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", descriptor.display()))
        .arg(format!("--proto_path={}", proto_root.display()))
        .args(&protos)
        .status()?;
    if !status.success() {
        return Err(format!("protoc failed to write the descriptor set: {status}").into());
    }
    write_message_registry(&descriptor, &out_dir.join("message_registry.rs"))?;
    Ok(())
}

fn proto_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "proto"))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes `for_each_message!`, which calls a macro with the Rust type and the
/// full proto name of every top-level message of package ctrl.v1.
fn write_message_registry(descriptor: &Path, out: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let set = FileDescriptorSet::decode(std::fs::read(descriptor)?.as_slice())?;
    let mut body = String::new();
    for file in set.file.iter().filter(|f| f.package() == "ctrl.v1") {
        for message in &file.message_type {
            let name = message.name();
            let nested: Vec<&str> = message
                .nested_type
                .iter()
                .filter(|n| !n.options.as_ref().is_some_and(|o| o.map_entry()))
                .map(|n| n.name())
                .collect();
            if !nested.is_empty() {
                return Err(format!(
                    "ctrl.v1.{name} declares nested messages {nested:?}; declare them at top level"
                )
                .into());
            }
            // prost names types with heck's UpperCamelCase (GenerateUploadURL -> GenerateUploadUrl).
            let rust = name.to_upper_camel_case();
            writeln!(
                body,
                "        $m!($crate::ctrl::v1::{rust}, \"ctrl.v1.{name}\");"
            )?;
        }
    }
    let code = format!(
        "/// Calls `$m!(RustType, \"ctrl.v1.Name\")` for every message of ctrl.v1.\n\
         #[macro_export]\n\
         macro_rules! for_each_message {{\n    ($m:ident) => {{\n{body}    }};\n}}\n"
    );
    std::fs::write(out, code)?;
    Ok(())
}
