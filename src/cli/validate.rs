//! `ms validate -f FILE|DIR|-`: the controller's parsing and validation, offline, for CI.
//!
//! Every file is read with the same parser the watcher uses ([`crate::manifest::parse_file`]),
//! so a manifest that passes here loads in the controller (per-namespace limits of a controller's
//! configuration aside). All errors of all files are reported in one run; references that do not
//! resolve among the files given, and objects defined in two files, are reported too.
//!
//! Within one document, an unknown field or a value of the wrong type is taken out and the
//! document read again, so each of its errors is reported, then the range checks of what is
//! left (see `manifest/parse/recover.rs`).
//!
//! # Caveats
//! The recovery stops at an error inside flow style (`{a: 1}`), and at anything that could be a
//! consequence of a removal (a required field or map taken out: it then reports less, never a
//! false error); at most 20 errors per document, the first only over 64 KiB.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use super::apply_cmd::{expand, read};
use super::{CmdResult, Failure};
use crate::manifest::{missing_references, parse_file, Kind, ManifestError, Object, ObjectKey};

/// Output of `ms validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum ValidateOutput {
    /// One line per problem, `file:line:col: field: message`.
    #[default]
    Text,
    /// `{"valid": bool, "files": N, "objects": N, "errors": [...], "warnings": [...]}`.
    Json,
}

/// Arguments of `ms validate`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  ms validate -f manifests/            # every *.yaml/*.yml of the directory
  ms validate -f web.yaml -o json      # for CI annotations
  cat web.yaml | ms validate -f -

Exit status: 0 when every file is valid (warnings allowed), 1 when any has an error.")]
pub(crate) struct ValidateArgs {
    /// Manifest file, directory (every *.yaml and *.yml in it, sorted) or `-` for stdin.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    files: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = ValidateOutput::Text)]
    output: ValidateOutput,
    /// Treat warnings (e.g. a group naming a launch configuration not among the files) as errors.
    #[arg(long)]
    strict: bool,
}

/// What validating a set of files found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    pub valid: bool,
    pub files: usize,
    pub objects: usize,
    pub errors: Vec<ManifestError>,
    pub warnings: Vec<ManifestError>,
}

/// Validates `(name, text)` files as the controller would load them together.
pub(crate) fn validate_texts(files: &[(String, String)]) -> Report {
    let mut report = Report {
        files: files.len(),
        ..Report::default()
    };
    // Identity → (file, line) of its first definition, to find objects defined twice.
    let mut defined: BTreeMap<ObjectKey, (PathBuf, usize, Object)> = BTreeMap::new();
    for (name, text) in files {
        let path = PathBuf::from(name);
        let parsed = parse_file(&path, text);
        report.errors.extend(parsed.errors);
        for o in parsed.objects {
            report.warnings.extend(o.warnings);
            let key = o.object.key();
            if let Some((first, line, _)) = defined.get(&key) {
                report.errors.push(ManifestError {
                    file: path.clone(),
                    line: o.line,
                    column: 1,
                    field: "metadata.name".into(),
                    message: format!(
                        "{} `{}/{}` is also defined in {}:{line}: the controller would ignore one of them",
                        key.kind,
                        key.namespace,
                        key.name,
                        first.display()
                    ),
                });
                continue;
            }
            defined.insert(key, (path.clone(), o.line, o.object));
        }
    }
    report.objects = defined.len();
    let plain: BTreeMap<ObjectKey, Object> = defined
        .iter()
        .map(|(k, (_, _, o))| (k.clone(), o.clone()))
        .collect();
    for (key, message) in missing_references(&plain) {
        let (file, line, _) = &defined[&key];
        let field = match key.kind {
            Kind::AutoScalingGroup => "spec.launchConfiguration",
            Kind::ScalingPolicy => "spec.autoScalingGroup",
            Kind::LaunchConfiguration | Kind::LoadBalancer => "",
        };
        report.warnings.push(ManifestError {
            file: file.clone(),
            line: *line,
            column: 1,
            field: field.into(),
            message: format!("{message} among the files validated"),
        });
    }
    report
        .errors
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    report.valid = report.errors.is_empty();
    report
}

pub(crate) fn run(args: ValidateArgs) -> CmdResult {
    let mut paths = Vec::new();
    for spec in &args.files {
        paths.extend(expand(spec)?);
    }
    let mut texts = Vec::new();
    for p in &paths {
        texts.push(read(p)?);
    }
    let mut report = validate_texts(&texts);
    if args.strict && !report.warnings.is_empty() {
        report.errors.append(&mut report.warnings);
        report.valid = false;
    }
    match args.output {
        ValidateOutput::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("report serializes")
            );
        }
        ValidateOutput::Text => {
            for w in &report.warnings {
                eprintln!("Warning: {w}");
            }
            for e in &report.errors {
                eprintln!("{e}");
            }
            if report.valid {
                println!(
                    "{} file{} valid ({} object{})",
                    report.files,
                    plural(report.files),
                    report.objects,
                    plural(report.objects)
                );
            }
        }
    }
    if report.valid {
        Ok(())
    } else {
        let bad: std::collections::BTreeSet<&PathBuf> =
            report.errors.iter().map(|e| &e.file).collect();
        Err(Failure::Message(format!(
            "{} error{} in {} of {} file{}",
            report.errors.len(),
            plural(report.errors.len()),
            bad.len(),
            report.files,
            plural(report.files)
        )))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LC: &str = "apiVersion: microscaler.io/v1\nkind: LaunchConfiguration\nmetadata:\n  name: web\nspec:\n  image: nginx\n";
    const GROUP: &str = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n  minSize: 1\n  maxSize: 3\n  desiredCapacity: 2\n";

    fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn valid_files_together_are_valid_without_warnings() {
        let r = validate_texts(&files(&[("lc.yaml", LC), ("asg.yaml", GROUP)]));
        assert!(r.valid, "{r:?}");
        assert_eq!(r.objects, 2);
        assert!(r.warnings.is_empty(), "{r:?}");
    }

    #[test]
    fn every_error_of_every_file_is_reported() {
        let bad_group = GROUP.replace("minSize: 1", "minSize: 5");
        let bad_kind = LC.replace("LaunchConfiguration", "LaunchConfig");
        let two_docs = format!(
            "{bad_group}---\n{}",
            bad_group.replace("name: web\n", "name: api\n")
        );
        let r = validate_texts(&files(&[("a.yaml", &two_docs), ("b.yaml", &bad_kind)]));
        assert!(!r.valid);
        let files: Vec<_> = r
            .errors
            .iter()
            .map(|e| e.file.display().to_string())
            .collect();
        assert_eq!(files.iter().filter(|f| *f == "a.yaml").count(), 2, "{r:#?}");
        assert_eq!(files.iter().filter(|f| *f == "b.yaml").count(), 1, "{r:#?}");
        assert!(r.errors.iter().all(|e| e.line > 0));
    }

    #[test]
    fn three_errors_of_one_document_are_three_located_errors() {
        // (spec lines after the group's head, the `file:line:col` of each error)
        let head = "apiVersion: microscaler.io/v1\nkind: AutoScalingGroup\nmetadata:\n  name: web\nspec:\n  launchConfiguration: web\n";
        let table: &[(&str, &[&str])] = &[
            (
                "  minSize: 1\n  maxSize: 3\n  desiredCapacty: 2\n  scaleOutCooldown: later\n  availabilityZones: [a, a]\n",
                &["g.yaml:9:3", "g.yaml:10:3", "g.yaml:11:26"],
            ),
            (
                "  minSize: 1\n  maxSize: 3\n  state: Paused\n  maxSurge: lots\n  domain: 7\n  mxUnavailable: 1\n",
                &["g.yaml:9:3", "g.yaml:10:3", "g.yaml:12:3"],
            ),
        ];
        for (spec, want) in table {
            let r = validate_texts(&files(&[("g.yaml", &format!("{head}{spec}"))]));
            let got: Vec<String> = r
                .errors
                .iter()
                .map(|e| format!("{}:{}:{}", e.file.display(), e.line, e.column))
                .collect();
            assert_eq!(got, *want, "{spec}{:#?}", r.errors);
        }
    }

    #[test]
    fn an_object_defined_in_two_files_is_an_error() {
        let r = validate_texts(&files(&[("a.yaml", LC), ("b.yaml", LC)]));
        assert!(!r.valid);
        assert!(
            r.errors[0].message.contains("also defined in a.yaml:1"),
            "{r:?}"
        );
    }

    #[test]
    fn a_missing_launch_configuration_is_a_warning() {
        let r = validate_texts(&files(&[("asg.yaml", GROUP)]));
        assert!(r.valid);
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].field, "spec.launchConfiguration");
    }
}
