//! `ms apply -f FILE|DIR|-`: sends each file as one request, so errors name the user's file.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;

use super::{report, CmdResult, Failure};
use crate::client::Client;
use crate::wire::ChangeResponse;

/// Arguments of `ms apply`.
#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// Manifest file, directory (every *.yaml and *.yml in it, sorted, not recursive) or `-`
    /// for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Validate and show what would change, write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Wait until every applied group (and every group of an applied launch configuration) is
    /// converged on the new spec; fail at once when one turns Degraded.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (`90s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = super::wait::parse_timeout, requires = "wait")]
    timeout: std::time::Duration,
    /// With --wait: ready only once every instance has been running this long (the
    /// controller's crash window by default: an instance that exits sooner is a crash).
    #[arg(long, default_value = "10s", value_parser = super::wait::parse_timeout, requires = "wait")]
    min_ready: std::time::Duration,
}

/// The files named by `-f`: a directory expands to its `*.yaml`/`*.yml` files, sorted.
pub(crate) fn expand(spec: &str) -> Result<Vec<PathBuf>, Failure> {
    if spec == "-" {
        return Ok(vec![PathBuf::from("-")]);
    }
    let path = Path::new(spec);
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::Message(format!("cannot read {spec}: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Failure::Message(format!("cannot read {spec}: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Failure::Message(format!(
            "{spec} holds no *.yaml or *.yml file"
        )));
    }
    Ok(files)
}

/// Reads a file named by `-f` (`-` is stdin); returns the name to show in errors and the text.
pub(crate) fn read(path: &Path) -> Result<(String, String), Failure> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::Message(format!("cannot read stdin: {e}")))?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Message(format!("cannot read {}: {e}", path.display())))?;
    Ok((path.display().to_string(), text))
}

/// Prints `autoscalinggroup/web created` lines and `Warning:` lines.
pub(crate) fn print_changes(r: &ChangeResponse) {
    let suffix = if r.dry_run { " (dry run)" } else { "" };
    for o in &r.results {
        println!(
            "{}/{} {}{suffix}",
            o.kind.as_str().to_ascii_lowercase(),
            o.name,
            o.action
        );
    }
    for w in &r.warnings {
        // Line 0: a warning about the request as a whole, not about a place in a file.
        if w.line == 0 {
            eprintln!("Warning: {}", w.message);
        } else {
            eprintln!("Warning: {w}");
        }
    }
}

pub(crate) async fn run(client: Client, args: ApplyArgs) -> CmdResult {
    let mut files = Vec::new();
    for spec in &args.files {
        files.extend(expand(spec)?);
    }
    // Each file is its own request: a broken file is reported and the others still apply,
    // as kubectl does; the exit status says something failed.
    let mut failed = 0usize;
    let mut last = None;
    let mut applied = Vec::new();
    for file in &files {
        let outcome = async {
            let (name, text) = read(file)?;
            let mut r = client.apply(&name, text.clone(), args.dry_run).await?;
            drop_resolved_references(&mut r, &name, &text, &applied);
            print_changes(&r);
            applied.extend(r.results.iter().cloned());
            Ok::<(), Failure>(())
        }
        .await;
        if let Err(f) = outcome {
            failed += 1;
            // Connection problems will not get better for the next file.
            let stop = matches!(&f, Failure::Message(m) if m.starts_with("cannot reach"));
            if files.len() > 1 && !stop {
                report(&f);
            } else {
                last = Some(f);
            }
            if stop {
                break;
            }
        }
    }
    match (failed, last) {
        (_, Some(f)) => Err(f),
        (0, None) if args.wait && !args.dry_run => {
            let groups = groups_to_wait_for(&client, &applied).await?;
            super::wait::wait_for(
                &client,
                &groups,
                super::wait::Goal::Ready,
                args.timeout,
                args.min_ready,
            )
            .await
        }
        (0, None) => Ok(()),
        (n, None) => Err(Failure::Message(format!(
            "{n} of {} files could not be applied",
            files.len()
        ))),
    }
}

/// Drops the "does not exist (yet)" warnings about references to objects this same command
/// applied from an earlier file (`ms apply -f lc.yaml -f asg.yaml`): the controller answered
/// before it had loaded the earlier file, but the reference does resolve.
fn drop_resolved_references(
    r: &mut ChangeResponse,
    name: &str,
    text: &str,
    earlier: &[crate::wire::ObjectResult],
) {
    use crate::manifest::{Kind, Object};
    let parsed = crate::manifest::parse_file(Path::new(name), text);
    let resolved = |line: usize, field: &str| -> bool {
        parsed.objects.iter().any(|o| {
            if o.line != line {
                return false;
            }
            let ns = &o.object.metadata().namespace;
            let (kind, target) = match (&o.object, field) {
                (Object::AutoScalingGroup(g), "spec.launchConfiguration") => {
                    (Kind::LaunchConfiguration, &g.spec.launch_configuration)
                }
                (Object::ScalingPolicy(p), "spec.autoScalingGroup") => {
                    (Kind::AutoScalingGroup, &p.spec.auto_scaling_group)
                }
                _ => return false,
            };
            earlier
                .iter()
                .any(|e| e.kind == kind && &e.namespace == ns && &e.name == target)
        })
    };
    r.warnings
        .retain(|w| !(w.message.contains("does not exist (yet)") && resolved(w.line, &w.field)));
}

/// The groups an apply changes: the applied groups, and the groups (on the controller) of each
/// applied launch configuration.
async fn groups_to_wait_for(
    client: &Client,
    applied: &[crate::wire::ObjectResult],
) -> Result<Vec<(String, String)>, Failure> {
    use crate::manifest::Kind;
    let mut groups: Vec<(String, String)> = applied
        .iter()
        .filter(|o| o.kind == Kind::AutoScalingGroup && o.action != "deleted")
        .map(|o| (o.namespace.clone(), o.name.clone()))
        .collect();
    for lc in applied
        .iter()
        .filter(|o| o.kind == Kind::LaunchConfiguration)
    {
        for g in client
            .list(Kind::AutoScalingGroup, Some(&lc.namespace))
            .await?
        {
            if g["spec"]["launchConfiguration"].as_str() == Some(lc.name.as_str()) {
                if let Some(name) = g["metadata"]["name"].as_str() {
                    groups.push((lc.namespace.clone(), name.to_string()));
                }
            }
        }
    }
    groups.sort();
    groups.dedup();
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_expands_to_its_yaml_files_sorted() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["b.yaml", "a.yml", "notes.txt", "c.yaml"] {
            std::fs::write(dir.path().join(f), "x: 1\n").unwrap();
        }
        let files = expand(dir.path().to_str().unwrap()).unwrap();
        let names: Vec<_> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml", "c.yaml"]);
    }

    #[test]
    fn a_reference_to_an_object_applied_from_an_earlier_file_is_not_warned_about() {
        use crate::manifest::{Kind, ManifestError};
        use crate::wire::ObjectResult;
        let group = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 2\n";
        let warning = ManifestError {
            file: "asg.yaml".into(),
            line: 1,
            column: 1,
            field: "spec.launchConfiguration".into(),
            message: "launch configuration `web` does not exist (yet) in namespace `default`"
                .into(),
        };
        let lc = |name: &str| ObjectResult {
            kind: Kind::LaunchConfiguration,
            namespace: "default".into(),
            name: name.into(),
            action: "created".into(),
            file: "lc.yaml".into(),
        };
        let mut r = ChangeResponse {
            warnings: vec![warning.clone()],
            ..Default::default()
        };
        drop_resolved_references(&mut r, "asg.yaml", group, &[lc("other")]);
        assert_eq!(r.warnings.len(), 1, "another LC does not resolve it");
        drop_resolved_references(&mut r, "asg.yaml", group, &[lc("web")]);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn a_missing_file_is_one_clear_error() {
        let Err(Failure::Message(m)) = expand("/nonexistent/web.yaml") else {
            panic!("expected an error")
        };
        assert!(m.starts_with("cannot read /nonexistent/web.yaml"), "{m}");
    }
}
