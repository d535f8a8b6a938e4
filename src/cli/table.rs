//! Column-aligned plain-text tables and kubectl-style ages, for `ms get` and `ms describe`.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// A table: a header row and rows of cells, printed with columns aligned by three spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: AsRef<str>>(headers: &[S]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.as_ref().to_string()).collect()],
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// All rows, the header first.
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// True when there is no data row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The aligned text, one line per row, each ending in `\n`; no trailing spaces.
    pub fn render(&self) -> String {
        self.render_indented("")
    }

    /// Like [`Table::render`] with every line prefixed (for sections of `ms describe`).
    pub fn render_indented(&self, indent: &str) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                line.push_str(cell);
                if i + 1 < columns {
                    let pad = width - cell.chars().count() + 3;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// kubectl-style age of a duration: `45s`, `5m`, `2h`, `3d`.
pub fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 120 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m", s / 60)
    } else if s < 48 * 3600 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86400)
    }
}

/// Age of an RFC 3339 timestamp in a JSON value, `<unknown>` when absent.
pub fn age_of(v: Option<&Value>, now: DateTime<Utc>) -> String {
    v.and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_age((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// A JSON value as a cell: strings bare, numbers as written, null/missing as `-`.
pub fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        // `1.0` reads as a version number in a table: whole floats print as integers.
        Some(Value::Number(n)) if n.is_f64() => {
            let f = n.as_f64().unwrap_or_default();
            if f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", f as i64)
            } else {
                f.to_string()
            }
        }
        Some(other) => other.to_string(),
    }
}

/// Age since an instance's `startedAt`, `-` when it never started.
pub fn started_age(instance: &Value, now: DateTime<Utc>) -> String {
    match instance.get("startedAt").filter(|v| !v.is_null()) {
        Some(v) => age_of(Some(v), now),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_have_no_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STATE", "AGE"]);
        t.row(vec!["web".into(), "Started".into(), "5m".into()]);
        t.row(vec!["a-long-name".into(), "-".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME          STATE     AGE\n\
             web           Started   5m\n\
             a-long-name   -\n"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(119), "119s");
        assert_eq!(human_age(300), "5m");
        assert_eq!(human_age(2 * 3600 + 5), "2h");
        assert_eq!(human_age(3 * 86400), "3d");
        assert_eq!(human_age(-4), "0s");
    }

    #[test]
    fn cells_show_missing_values_as_a_dash() {
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&Value::Null)), "-");
        assert_eq!(cell(Some(&serde_json::json!(["a", "b"]))), "a,b");
        assert_eq!(cell(Some(&serde_json::json!(3))), "3");
        assert_eq!(cell(Some(&serde_json::json!(2.0))), "2");
        assert_eq!(cell(Some(&serde_json::json!(0.5))), "0.5");
    }
}
