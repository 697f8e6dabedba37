//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "metadata.proto",
        "storage_resolve.proto",
        "library.proto",
        "playlist4.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed=proto/{f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
