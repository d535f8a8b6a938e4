//! Writes the manifest JSON Schemas into `schema/` (run `cargo run --example gen-schema` after changing the types).

use std::path::PathBuf;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    // Relative to the crate, not the current directory, so it works from anywhere.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in microscaler::manifest::schema::schemas() {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
