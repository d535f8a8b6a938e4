//! `ms get ... -w`: the table as `ms get` prints it, then one line per change, read from the
//! controller's `/v1/watch` stream (like `kubectl get -w`).

use serde_json::Value;

use super::get::View;
use super::{CmdResult, Failure, Output};
use crate::client::Client;

/// Prints `items` as `ms get` would, then a row (or a name, or a JSON line) per change until
/// the stream ends or the user interrupts.
pub(crate) async fn run(client: &Client, view: &View, items: Vec<Value>) -> CmdResult {
    let kind = view.watch_kind()?;
    // Subscribe before printing, so nothing that changes in between is missed; the stream's
    // current state (before SYNCED) is what was just listed and is skipped.
    let mut stream = client.watch(kind, view.namespace.as_deref()).await?;
    match &view.output {
        Output::Table | Output::Wide => print!("{}", view.table(&items, true)),
        Output::Name => {
            for i in &items {
                println!("{}", view.object_name(i));
            }
        }
        Output::Json => {
            for i in &items {
                println!("{i}");
            }
        }
        other => {
            return Err(Failure::Code(
                2,
                format!("-w prints tables, names or JSON lines, not {other:?}"),
            ))
        }
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut synced = false;
    let mut failure = None;
    stream
        .lines(|line| {
            if line.trim().is_empty() {
                return true; // heartbeat
            }
            let Ok(ev) = serde_json::from_str::<Value>(line) else {
                return true;
            };
            match ev["type"].as_str() {
                Some("SYNCED") => synced = true,
                Some("ERROR") => {
                    failure = Some(
                        ev["message"]
                            .as_str()
                            .unwrap_or("the watch ended")
                            .to_string(),
                    );
                    return false;
                }
                Some(t) if synced && view.shows(&ev["object"]) => {
                    let object = &ev["object"];
                    match &view.output {
                        Output::Name => println!("{}", view.object_name(object)),
                        Output::Json => {
                            println!("{}", serde_json::json!({"type": t, "object": object}))
                        }
                        _ => {
                            let row = view.table(std::slice::from_ref(object), false);
                            if t == "DELETED" {
                                // kubectl shows the last state of a deleted object; say so.
                                print!("{}", row.trim_end());
                                println!("   (deleted)");
                            } else {
                                print!("{row}");
                            }
                        }
                    }
                    let _ = std::io::stdout().flush();
                }
                _ => {}
            }
            true
        })
        .await?;
    match failure {
        Some(m) => Err(Failure::Message(m)),
        None => Err(Failure::Message("the controller ended the watch".into())),
    }
}
