//! What the tests of the file editor share: a three-document file, status blocks, helpers.

use std::fs;
use std::path::Path;

use crate::manifest::{Kind, ObjectKey};

pub(super) const FILE: &str = "# Launch configuration for web\n\
apiVersion: microscaler.io/v1\n\
kind: LaunchConfiguration\n\
metadata:\n  name: web   # the name\n\
spec:\n  image: 'nginx:1.27'\n  env: {A: \"1\", B: '2'}\n\
\n\
---\n\
apiVersion: \"microscaler.io/v1\"\n\
kind: AutoScalingGroup\n\
metadata:\n  name: web\n  namespace: shop\n\
spec:\n  launchConfiguration: web\n\n  minSize: 1   # at least one\n  maxSize: 4\n\
\n\
# the policy follows\n\
--- # third\n\
kind: ScalingPolicy\n\
metadata: {name: cpu}\n\
spec:\n  autoScalingGroup: web\n";

pub(super) const BLOCK: &str = "status:\n  observedGeneration: abc\n  current: 2\n";
pub(super) const BLOCK2: &str =
    "status:\n  observedGeneration: def\n  instances:\n  - name: web-1\n    zone: local\n";

pub(super) fn key() -> ObjectKey {
    ObjectKey::new(Kind::AutoScalingGroup, "shop", "web")
}

#[cfg(unix)]
pub(super) fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

pub(super) fn no_temp_files(dir: &Path) -> bool {
    fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().contains("ms-tmp"))
}

/// The first two documents of [`FILE`]: a file that parses and validates.
pub(super) fn valid_file() -> String {
    let end = FILE.find("# the policy follows").unwrap();
    let valid = FILE[..end].to_string();
    let parsed = crate::manifest::parse_file(Path::new("web.yaml"), &valid);
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    valid
}
