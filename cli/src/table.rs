//! Aligned text tables for people (`--json` is for scripts).

use std::fmt;

pub struct Table {
    rows: Vec<Vec<String>>,
    /// The terminal's width and the column that gives way first (None: never cut).
    fit: Option<(usize, usize)>,
}

const GAP: usize = 3;

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
            fit: None,
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Fit lines into `width` columns: column `shrink` gives way first (down to 8 characters,
    /// cut with "…"), then each line is cut at the width. `None` (not a terminal, or --wide):
    /// nothing is cut.
    pub fn fit(mut self, width: Option<usize>, shrink: usize) -> Table {
        self.fit = width.map(|w| (w, shrink));
        self
    }

    /// Each column's width, after fitting.
    pub fn widths(&self) -> Vec<usize> {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        if let Some((width, shrink)) = self.fit {
            let total: usize = widths.iter().sum::<usize>() + GAP * cols.saturating_sub(1);
            if total > width && shrink < cols {
                let over = total - width;
                widths[shrink] = widths[shrink]
                    .saturating_sub(over)
                    .max(8.min(widths[shrink]));
            }
        }
        widths
    }

    /// One line in the table's columns (a row printed later, as `--watch` does).
    pub fn line(&self, widths: &[usize], cells: &[String]) -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{:<w$}", cut(cell, w)));
                out.push_str(&" ".repeat(GAP));
            }
        }
        match self.fit {
            Some((width, _)) => cut(&out, width),
            None => out,
        }
    }
}

/// `s` in at most `w` characters, "…" marking a cut.
pub fn cut(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(w.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The terminal's width when standard output is one (`COLUMNS` first, as shells set it).
pub fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(c);
    }
    // ratatui's terminal backend asks the terminal (TIOCGWINSZ) for us.
    ratatui::crossterm::terminal::size()
        .ok()
        .filter(|(cols, _)| *cols > 0)
        .map(|(cols, _)| usize::from(cols))
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        for row in &self.rows {
            writeln!(f, "{}", self.line(&widths, row))?;
        }
        Ok(())
    }
}

/// 1536 -> "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(&["NAME", "STATUS"]);
        t.row(vec!["a-long-name".into(), "ready".into()]);
        assert_eq!(t.to_string(), "NAME          STATUS\na-long-name   ready\n");
    }

    #[test]
    fn fits_the_terminal_by_cutting_one_column_first() {
        let mut t = Table::new(&["NAME", "STATUS", "ID"]);
        t.row(vec![
            "a-very-long-checkpoint-name".into(),
            "ready".into(),
            "0123456789".into(),
        ]);
        let t = t.fit(Some(30), 0);
        let text = t.to_string();
        assert!(text.lines().all(|l| l.chars().count() <= 30), "{text}");
        assert!(text.contains("a-very-…"), "{text}");
        assert!(text.contains("ready"), "{text}");
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
