//! A tiny document model rendered both as Markdown and as self-contained HTML, so the two reports cannot drift.

use std::fmt::Write;

/// One block of a report.
#[derive(Debug, Clone)]
pub enum Block {
    /// A heading of level 1–3.
    Heading(u8, String),
    /// A paragraph (Markdown inline syntax is passed through to the .md and escaped in the .html).
    Paragraph(String),
    /// A bulleted list.
    List(Vec<String>),
    /// A table: header row and rows.
    Table(Vec<String>, Vec<Vec<String>>),
    /// A figure: file name under plots/ and its SVG.
    Plot(String, String),
}

/// An ordered list of blocks.
#[derive(Debug, Default, Clone)]
pub struct Document {
    /// The blocks, in order.
    pub blocks: Vec<Block>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Document {
    /// Appends a block.
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// The figures, as (file name, SVG).
    pub fn plots(&self) -> Vec<(&str, &str)> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Plot(name, svg) => Some((name.as_str(), svg.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Markdown, figures referenced as `plots/NAME`.
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = writeln!(md, "{} {text}\n", "#".repeat(*level as usize));
                }
                Block::Paragraph(text) => {
                    let _ = writeln!(md, "{text}\n");
                }
                Block::List(items) => {
                    for item in items {
                        let _ = writeln!(md, "- {item}");
                    }
                    md.push('\n');
                }
                Block::Table(header, rows) => {
                    let _ = writeln!(md, "| {} |", header.join(" | "));
                    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
                    for row in rows {
                        let _ = writeln!(md, "| {} |", row.join(" | "));
                    }
                    md.push('\n');
                }
                Block::Plot(name, _) => {
                    let _ = writeln!(md, "![{name}](plots/{name})\n");
                }
            }
        }
        md
    }

    /// One HTML file with the SVGs inline (no external resources).
    pub fn to_html(&self) -> String {
        let mut html = String::from(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>transport-lab report</title><style>\
             body{font-family:Helvetica,Arial,sans-serif;max-width:980px;margin:2em auto;line-height:1.45}\
             table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
             th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}</style></head><body>",
        );
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = write!(html, "<h{level}>{}</h{level}>", escape(text));
                }
                Block::Paragraph(text) => {
                    let _ = write!(html, "<p>{}</p>", escape(text));
                }
                Block::List(items) => {
                    html.push_str("<ul>");
                    for item in items {
                        let _ = write!(html, "<li>{}</li>", escape(item));
                    }
                    html.push_str("</ul>");
                }
                Block::Table(header, rows) => {
                    html.push_str("<table><tr>");
                    for h in header {
                        let _ = write!(html, "<th>{}</th>", escape(h));
                    }
                    html.push_str("</tr>");
                    for row in rows {
                        html.push_str("<tr>");
                        for cell in row {
                            let _ = write!(html, "<td>{}</td>", escape(cell));
                        }
                        html.push_str("</tr>");
                    }
                    html.push_str("</table>");
                }
                Block::Plot(name, svg) => {
                    let _ = write!(html, "<figure>{svg}<figcaption>{}</figcaption></figure>", escape(name));
                }
            }
        }
        html.push_str("</body></html>");
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_html_carry_the_same_content() {
        let mut doc = Document::default();
        doc.push(Block::Heading(1, "Title".into()));
        doc.push(Block::Paragraph("a < b".into()));
        doc.push(Block::Table(vec!["x".into(), "y".into()], vec![vec!["1".into(), "2".into()]]));
        doc.push(Block::Plot("p.svg".into(), "<svg></svg>".into()));
        let md = doc.to_markdown();
        assert!(md.contains("# Title") && md.contains("| x | y |") && md.contains("| 1 | 2 |") && md.contains("](plots/p.svg)"));
        let html = doc.to_html();
        assert!(html.contains("<h1>Title</h1>") && html.contains("a &lt; b") && html.contains("<td>2</td>") && html.contains("<svg></svg>"));
        assert_eq!(doc.plots(), vec![("p.svg", "<svg></svg>")]);
    }
}
