//! What `floodwall top` draws, from the admin API's two documents: pure,
//! so a test renders a frame of real `/status` and `/history.json` into a
//! buffer and reads it back.
//!
//! The figures are the status page's, in the same order: per route the
//! limit, what sets it, in flight, queue, refusals and latency over the
//! last second; then probes, the store and the last reload. The documents
//! are read as JSON values, not the server's own types, so a `top` of one
//! version can watch a floodwall of another: a missing field shows `-`.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, Widget};
use serde_json::Value;

/// One poll of the admin API.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Where it came from, for the title.
    pub admin: String,
    /// `GET /status`.
    pub status: Value,
    /// `GET /history.json`.
    pub history: Value,
    /// Why the last poll failed, if it did (the previous figures stay).
    pub error: Option<String>,
}

fn num(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(x) if n.is_f64() && x.fract() != 0.0 => format!("{x:.1}"),
            Some(x) if n.is_f64() => format!("{x:.0}"),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        _ => "-".to_owned(),
    }
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or("-".to_owned(), |x| format!("{x:.1}"))
}

/// The newest point of the history, if any.
fn last_point(history: &Value) -> Option<&Value> {
    history["points"].as_array().and_then(|p| p.last())
}

/// Refusals per second in the newest point, summed over reasons.
fn refused_per_s(point: Option<&Value>) -> f64 {
    point
        .and_then(|p| p["refused"].as_object())
        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum())
}

/// The routes table.
fn routes_table(s: &Snapshot) -> Table<'static> {
    let header = Row::new(
        [
            "route",
            "upstream",
            "algo",
            "limit",
            "algo lim",
            "inflight",
            "queue",
            "use",
            "tenants",
            "limited by",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let rows: Vec<Row> = s.status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let limit = r["limit"].as_f64().unwrap_or(0.0);
            let inflight = r["inflight"].as_f64().unwrap_or(0.0);
            let util = if limit > 0.0 { inflight / limit } else { 0.0 };
            let style = if util >= 0.95 {
                Style::default().fg(Color::Red)
            } else if util >= 0.75 {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default()
            };
            Row::new(vec![
                Cell::from(num(&r["name"])),
                Cell::from(num(&r["upstream"])),
                Cell::from(num(&r["algorithm"])),
                Cell::from(num(&r["limit"])),
                Cell::from(num(&r["algorithm_limit"])),
                Cell::from(num(&r["inflight"])),
                Cell::from(num(&r["queue_depth"])),
                Cell::from(format!("{:.0}%", util * 100.0)).style(style),
                Cell::from(num(&r["tenants_active"])),
                Cell::from(num(&r["limited_by"])),
            ])
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(6),
            Constraint::Length(5),
            Constraint::Length(7),
            Constraint::Min(20),
        ],
    )
    .header(header)
    .block(Block::default().borders(Borders::ALL).title(" routes "))
}

/// The classes table: one row per route and class.
fn classes_table(s: &Snapshot) -> Table<'static> {
    let header = Row::new(
        [
            "route", "class", "inflight", "reserved", "admitted", "ok", "error", "dropped",
            "refused",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let mut rows = Vec::new();
    for r in s.status["routes"].as_array().into_iter().flatten() {
        for c in r["classes"].as_array().into_iter().flatten() {
            let refused: u64 = c["rejections"]
                .as_object()
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
            rows.push(Row::new(vec![
                Cell::from(num(&r["name"])),
                Cell::from(num(&c["name"])),
                Cell::from(num(&c["inflight"])),
                Cell::from(num(&c["reserved"])),
                Cell::from(num(&c["admitted"])),
                Cell::from(num(&c["outcomes"]["success"])),
                Cell::from(num(&c["outcomes"]["error"])),
                Cell::from(num(&c["outcomes"]["dropped"])),
                Cell::from(refused.to_string()),
            ]));
        }
    }
    Table::new(
        rows,
        [
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ],
    )
    .header(header)
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" classes (totals since start) "),
    )
}

/// The last second, from the history: finished, refused by reason, p50/p99.
fn last_second(s: &Snapshot) -> Paragraph<'static> {
    let p = last_point(&s.history);
    let mut lines = vec![Line::from(vec![
        Span::raw("finished/s "),
        Span::styled(
            p.map_or("-".to_owned(), |p| num(&p["finished"])),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw("   refused/s "),
        Span::styled(
            format!("{:.1}", refused_per_s(p)),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "   p50 {} ms   p99 {} ms",
            p.map_or("-".to_owned(), |p| ms(&p["p50_ms"])),
            p.map_or("-".to_owned(), |p| ms(&p["p99_ms"]))
        )),
    ])];
    let reasons: Vec<String> = p
        .and_then(|p| p["refused"].as_object())
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_f64().unwrap_or(0.0) > 0.0)
        .map(|(k, v)| format!("{k} {}", num(v)))
        .collect();
    lines.push(Line::from(if reasons.is_empty() {
        "no refusals".to_owned()
    } else {
        format!("refused by reason: {}", reasons.join(", "))
    }));
    Paragraph::new(lines).block(
        Block::default()
            .borders(Borders::ALL)
            .title(" last second "),
    )
}

/// Probes, store and reload, one line each.
fn health(s: &Snapshot) -> Paragraph<'static> {
    let mut lines = Vec::new();
    for p in s.status["probes"].as_array().into_iter().flatten() {
        lines.push(Line::from(format!(
            "probe {} ({}): {}{}{}",
            num(&p["name"]),
            num(&p["kind"]),
            num(&p["state"]),
            if p["limiting"].as_bool() == Some(true) {
                format!(", limiting to {}", num(&p["constraint"]))
            } else {
                String::new()
            },
            p["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!(", last error: {e}"))
        )));
    }
    if lines.is_empty() {
        lines.push(Line::from("no probes"));
    }
    // The upstream guards, where configured: one line per route that has any.
    for r in s.status["routes"].as_array().into_iter().flatten() {
        let mut g = Vec::new();
        if let Some(state) = r["breaker"]["state"].as_str() {
            g.push(format!("breaker {state}"));
        }
        if r["bulkhead"].is_object() {
            g.push(format!(
                "bulkhead {} of {}",
                num(&r["bulkhead"]["in_use"]),
                num(&r["bulkhead"]["tickets"])
            ));
        }
        if r["retry_budget"].is_object() {
            g.push(format!(
                "retry budget {} left",
                num(&r["retry_budget"]["remaining"])
            ));
        }
        if r["mode"] == "shadow" {
            g.push("shadow mode".to_owned());
        }
        if !g.is_empty() {
            lines.push(Line::from(format!(
                "route {} → {}: {}",
                num(&r["name"]),
                num(&r["upstream"]),
                g.join(", ")
            )));
        }
    }
    let store = &s.status["store"];
    lines.push(Line::from(if store.is_null() {
        "store: none (the limit is this replica's own)".to_owned()
    } else {
        format!(
            "store {} ({} mode, replica {}): {}{}",
            num(&store["url"]),
            num(&store["mode"]),
            num(&store["replica_id"]),
            num(&store["state"]),
            store["last_error"]
                .as_str()
                .map_or(String::new(), |e| format!(", last error: {e}"))
        )
    }));
    let reload = &s.status["reload"];
    lines.push(Line::from(format!(
        "reloads: {} ok, {} refused{}",
        num(&reload["ok_total"]),
        num(&reload["error_total"]),
        reload["last_error"]
            .as_str()
            .map_or(String::new(), |e| format!(", last refused: {e}"))
    )));
    Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" health "))
}

/// In flight of the first route over the history, as a sparkline.
fn inflight_history(s: &Snapshot) -> (String, Vec<u64>) {
    let name = s.status["routes"][0]["name"]
        .as_str()
        .unwrap_or("-")
        .to_owned();
    let data = s.history["points"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["routes"][0]["inflight"].as_u64().unwrap_or(0))
        .collect();
    (name, data)
}

/// Draws the whole screen into `buf` over `area`.
pub fn render(s: &Snapshot, area: Rect, buf: &mut Buffer) {
    let routes = s.status["routes"].as_array().map_or(0, Vec::len) as u16;
    let classes: u16 = s.status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["classes"].as_array().map_or(0, Vec::len) as u16)
        .sum();
    let guarded = s.status["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["breaker"].is_object()
                || r["bulkhead"].is_object()
                || r["retry_budget"].is_object()
                || r["mode"] == "shadow"
        })
        .count() as u16;
    let health_lines =
        s.status["probes"].as_array().map_or(0, Vec::len).max(1) as u16 + 2 + guarded;
    let [title, routes_area, classes_area, second_area, health_area, spark_area] =
        Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(routes + 3),
            Constraint::Length(classes + 3),
            Constraint::Length(4),
            Constraint::Length(health_lines + 2),
            Constraint::Min(3),
        ])
        .areas(area);
    let draining = s.status["draining"].as_bool() == Some(true);
    let mut head = vec![Span::styled(
        format!("floodwall top — {} — q quits", s.admin),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if draining {
        head.push(Span::styled(
            "  DRAINING",
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if let Some(e) = &s.error {
        head.push(Span::styled(
            format!("  poll failed: {e}"),
            Style::default().fg(Color::Red),
        ));
    }
    Paragraph::new(Line::from(head)).render(title, buf);
    Widget::render(routes_table(s), routes_area, buf);
    Widget::render(classes_table(s), classes_area, buf);
    last_second(s).render(second_area, buf);
    health(s).render(health_area, buf);
    let (name, data) = inflight_history(s);
    // The newest points that fit inside the borders.
    let fit = usize::from(spark_area.width.saturating_sub(2));
    let data = &data[data.len().saturating_sub(fit)..];
    Sparkline::default()
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" in flight, route {name}, last {} s ", data.len())),
        )
        .data(data)
        .render(spark_area, buf);
}

/// The screen as plain text, `width` × `height`, trailing spaces trimmed:
/// what `floodwall top --once` prints.
pub fn to_text(s: &Snapshot, width: u16, height: u16) -> String {
    let area = Rect::new(0, 0, width, height);
    let mut buf = Buffer::empty(area);
    render(s, area, &mut buf);
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buf[(x, y)].symbol()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot() -> Snapshot {
        Snapshot {
            admin: "127.0.0.1:9464".to_owned(),
            status: json!({
                "draining": false,
                "routes": [{
                    "name": "api", "upstream": "pg", "algorithm": "aimd",
                    "limit": 20, "algorithm_limit": 24, "inflight": 19,
                    "queue_depth": 3, "tenants_active": 2,
                    "limited_by": "probe pg: 20 of 24",
                    "breaker": {"state": "half_open"},
                    "bulkhead": {"in_use": 3, "tickets": 4},
                    "classes": [{
                        "name": "interactive", "inflight": 12, "reserved": 10,
                        "admitted": 1234,
                        "outcomes": {"success": 1200, "error": 4, "dropped": 1, "ignored": 0},
                        "rejections": {"wip_limit_exceeded": 7, "queue_full": 2}
                    }]
                }],
                "probes": [{"name": "pg", "kind": "postgres", "state": "saturated",
                            "limiting": true, "constraint": 20, "last_error": null}],
                "store": null,
                "reload": {"ok_total": 2, "error_total": 1, "last_error": "limit.max: must be at least 1"}
            }),
            history: json!({"points": [
                {"finished": 180.0, "refused": {"wip_limit_exceeded": 0.0}, "p50_ms": 4.0, "p99_ms": 9.0,
                 "routes": [{"inflight": 5}]},
                {"finished": 190.5, "refused": {"wip_limit_exceeded": 12.0, "queue_full": 3.0},
                 "p50_ms": 5.25, "p99_ms": 31.0, "routes": [{"inflight": 19}]}
            ]}),
            error: None,
        }
    }

    #[test]
    fn every_figure_of_the_documents_is_on_screen() {
        let text = to_text(&snapshot(), 140, 40);
        for want in [
            "floodwall top — 127.0.0.1:9464",
            "api",
            "aimd",
            "probe pg: 20 of 24",
            "95%",
            "interactive",
            "1234",
            "1200",
            "finished/s 190.5",
            "refused/s 15.0",
            "p50 5.2 ms   p99 31.0 ms",
            "queue_full 3",
            "wip_limit_exceeded 12",
            "probe pg (postgres): saturated, limiting to 20",
            "store: none",
            "reloads: 2 ok, 1 refused, last refused: limit.max: must be at least 1",
            "in flight, route api, last 2 s",
            "route api → pg: breaker half_open, bulkhead 3 of 4",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        // 12 + 7 + 2: the class's refusals, summed over reasons.
        assert!(
            text.lines().any(|l| l.contains("interactive")
                && l.trim_end().trim_end_matches('│').split_whitespace().last() == Some("9")),
            "{text}"
        );
    }

    #[test]
    fn missing_fields_show_a_dash_and_a_failed_poll_is_said() {
        let s = Snapshot {
            admin: "a:1".to_owned(),
            status: json!({"routes": [{"name": "r"}]}),
            history: Value::Null,
            error: Some("connection refused".to_owned()),
        };
        let text = to_text(&s, 120, 30);
        assert!(text.contains("poll failed: connection refused"), "{text}");
        assert!(text.contains("finished/s -"), "{text}");
        assert!(
            text.contains("no refusals") && text.contains("no probes"),
            "{text}"
        );
        // A tiny terminal draws what fits and does not panic.
        let _ = to_text(&snapshot(), 10, 3);
        let _ = to_text(&snapshot(), 1, 1);
    }
}
