//! How `ms wait` and `ms apply --wait` show progress: live bars (indicatif) on a terminal, one
//! plain line per change otherwise (a CI log stays readable and diffable).

use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress of several groups.
pub(crate) enum Progress {
    /// A bar per group: ready of desired, and the rollout's step.
    Bars {
        multi: MultiProgress,
        bars: BTreeMap<String, ProgressBar>,
    },
    /// The last line printed per group (a line is printed only when it changes).
    Lines(BTreeMap<String, String>),
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub(crate) fn new() -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: BTreeMap::new(),
            }
        } else {
            Progress::Lines(BTreeMap::new())
        }
    }

    /// Shows where `name` stands: `ready` of `desired`, and `line` in words.
    pub(crate) fn update(&mut self, name: &str, ready: u64, desired: u64, line: &str) {
        match self {
            Progress::Bars { multi, bars } => {
                let bar = bars.entry(name.to_string()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(desired));
                    b.set_style(
                        ProgressStyle::with_template("{prefix:.bold} [{bar:20}] {pos}/{len} {msg}")
                            .expect("the template is valid")
                            .progress_chars("=> "),
                    );
                    b.set_prefix(format!("autoscalinggroup/{name}"));
                    b
                });
                bar.set_length(desired);
                bar.set_position(ready.min(desired));
                bar.set_message(line.to_string());
            }
            Progress::Lines(shown) => {
                if shown.get(name).map(String::as_str) != Some(line) {
                    eprintln!("autoscalinggroup/{name}: {line}");
                    shown.insert(name.to_string(), line.to_string());
                }
            }
        }
    }

    /// `name` reached its goal: its bar is finished (and stays), or nothing more is printed.
    pub(crate) fn done(&mut self, name: &str) {
        if let Progress::Bars { bars, .. } = self {
            if let Some(b) = bars.get(name) {
                b.finish_with_message("done");
            }
        }
    }

    /// Clears the bars before an error line is printed.
    pub(crate) fn abandon(&mut self) {
        if let Progress::Bars { bars, .. } = self {
            for b in bars.values() {
                b.abandon();
            }
        }
    }
}
