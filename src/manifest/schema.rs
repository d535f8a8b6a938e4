//! JSON Schemas of the three manifest kinds, for editors (`# yaml-language-server: $schema=...`).

/// `(file name, pretty JSON)` for each kind's schema, as committed under `schema/`.
pub fn schemas() -> Vec<(&'static str, String)> {
    Vec::new()
}
