//! `ms strip-status` and `ms gitops init` with the real `git`: status blocks become invisible to
//! git, and git commands that refuse local changes work on a checkout that has them.
//! (No Docker engine needed; the controller in a checkout is tested in `tests/e2e/gitops.rs`.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use microscaler::files::{splice_status, strip_statuses};

const MS: &str = env!("CARGO_BIN_EXE_ms");

const WEB: &str = "# the web group\napiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 3\n";
const STATUS: &str = "status:\n  observedGeneration: abc\n  current: 1\n";

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = run(Command::new("git").arg("-C").arg(dir).args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with `m/web.yaml` and `ci.yaml` committed on `main`, and a branch `other`.
fn repo() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path().canonicalize().unwrap();
    git(&top, &["init", "-q", "-b", "main"]);
    git(&top, &["config", "user.email", "test@example.com"]);
    git(&top, &["config", "user.name", "test"]);
    std::fs::create_dir(top.join("m")).unwrap();
    std::fs::write(top.join("m/web.yaml"), WEB).unwrap();
    // Not a manifest and not in the watched directory: its `status:` is content.
    std::fs::write(top.join("ci.yaml"), "jobs: 1\nstatus:\n  badge: green\n").unwrap();
    git(&top, &["add", "-A"]);
    git(&top, &["commit", "-qm", "init"]);
    git(&top, &["checkout", "-q", "-b", "other"]);
    std::fs::write(
        top.join("m/web.yaml"),
        WEB.replace("maxSize: 3", "maxSize: 4"),
    )
    .unwrap();
    git(&top, &["commit", "-qam", "bigger"]);
    git(&top, &["checkout", "-q", "main"]);
    (tmp, top)
}

fn with_status(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, splice_status(&text, 0, Some(STATUS)).unwrap()).unwrap();
}

fn strip_with_ms(input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(MS)
        .arg("strip-status")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn strip_status_gives_back_the_committed_bytes_and_passes_anything_else_through() {
    let with = splice_status(WEB, 0, Some(STATUS)).unwrap();
    assert_eq!(strip_with_ms(with.as_bytes()), WEB.as_bytes());
    assert_eq!(strip_statuses(&with), WEB);
    let crlf = WEB.replace('\n', "\r\n");
    let with = splice_status(&crlf, 0, Some(STATUS)).unwrap();
    assert_eq!(strip_with_ms(with.as_bytes()), crlf.as_bytes());
    let binary = [
        0xffu8, 0xfe, b's', b't', b'a', b't', b'u', b's', b':', b'\n',
    ];
    assert_eq!(strip_with_ms(&binary), binary);
}

#[test]
fn gitops_init_makes_status_blocks_invisible_to_git_status_diff_and_checkout() {
    let (_tmp, top) = repo();
    with_status(&top.join("m/web.yaml"));
    assert_eq!(git(&top, &["status", "--porcelain"]), " M m/web.yaml\n");
    // What the issue saw: checkout refuses.
    let refused = Command::new("git")
        .arg("-C")
        .arg(&top)
        .args(["checkout", "-q", "other"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("would be overwritten"));

    let out = run(Command::new(MS).args(["gitops", "init"]).arg(top.join("m")));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("m/**/*.yaml filter=ms-status"), "{said}");
    assert!(said.contains("1 manifest(s)"), "{said}");
    assert_eq!(git(&top, &["status", "--porcelain"]), "");
    assert_eq!(git(&top, &["diff"]), "");
    // Nothing tracked was added or changed by init itself.
    assert!(!top.join(".gitattributes").exists());
    let attributes = std::fs::read_to_string(top.join(".git/info/attributes")).unwrap();
    assert!(attributes.contains("m/**/*.yml filter=ms-status"));
    // Running it again changes nothing.
    let again = run(Command::new(MS).args(["gitops", "init"]).arg(top.join("m")));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already has"));
    assert_eq!(
        std::fs::read_to_string(top.join(".git/info/attributes")).unwrap(),
        attributes
    );
    // YAML outside the watched directory is not filtered.
    std::fs::write(top.join("ci.yaml"), "jobs: 1\nstatus:\n  badge: red\n").unwrap();
    assert_eq!(git(&top, &["status", "--porcelain"]), " M ci.yaml\n");
    git(&top, &["checkout", "--", "ci.yaml"]);
    // A commit of everything stores no status block.
    git(&top, &["commit", "-qam", "nothing", "--allow-empty"]);
    assert_eq!(git(&top, &["show", "HEAD:m/web.yaml"]), WEB);
    // And the branch switch works: the other branch's file, without a status block (the
    // controller writes it again).
    git(&top, &["checkout", "-q", "other"]);
    assert_eq!(
        std::fs::read_to_string(top.join("m/web.yaml")).unwrap(),
        WEB.replace("maxSize: 3", "maxSize: 4")
    );
    with_status(&top.join("m/web.yaml"));
    run(Command::new(MS).args(["gitops", "init"]).arg(top.join("m")));
    git(&top, &["checkout", "-q", "main"]);
    assert_eq!(git(&top, &["status", "--porcelain"]), "");
}

#[test]
fn a_real_spec_change_stays_modified_and_is_never_staged() {
    let (_tmp, top) = repo();
    run(Command::new(MS).args(["gitops", "init"]).arg(top.join("m")));
    let path = top.join("m/web.yaml");
    std::fs::write(&path, WEB.replace("maxSize: 3", "maxSize: 5")).unwrap();
    with_status(&path);
    // Re-arming is what init (and the controller after each write) does.
    run(Command::new(MS).args(["gitops", "init"]).arg(top.join("m")));
    assert_eq!(git(&top, &["status", "--porcelain"]), " M m/web.yaml\n");
    assert_eq!(git(&top, &["diff", "--cached"]), "");
    let diff = git(&top, &["diff"]);
    assert!(diff.contains("+  maxSize: 5"), "{diff}");
    assert!(
        !diff.contains("status"),
        "the status block is not in the diff: {diff}"
    );
}

#[test]
fn gitops_init_outside_a_work_tree_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(MS)
        .args(["gitops", "init"])
        .arg(tmp.path())
        .env("GIT_CEILING_DIRECTORIES", tmp.path().parent().unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not inside a git work tree"), "{err}");
}
