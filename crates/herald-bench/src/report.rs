//! Writing results: a markdown table per load, a JSON file per scenario and target, and the summary table of
//! Herald/Nchan ratios built from those files.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::blip::BlipReport;
use crate::load::LoadReport;
use crate::scenarios::{Better, Scenario};
use crate::spec::Target;

/// One scenario run against one target: what `bench/results/<scenario>.<target>.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ScenarioResult {
    pub(crate) scenario: String,
    pub(crate) description: String,
    pub(crate) cut: Option<String>,
    pub(crate) target: String,
    /// Which client the subscribers were (`herald-client` in results written before there was a choice).
    #[serde(default = "herald_client")]
    pub(crate) generator: String,
    pub(crate) metric: String,
    pub(crate) better: Better,
    pub(crate) headline: Option<f64>,
    /// p99 latency of the step the headline comes from, ms.
    pub(crate) p99_ms: Option<f64>,
    /// The highest publish rate held with p99 under 100 ms, messages/s.
    pub(crate) rate_held: Option<f64>,
    pub(crate) idle_cpu: Option<f64>,
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) errors: u64,
    /// The whole load report.
    pub(crate) load: serde_json::Value,
}

impl<'de> Deserialize<'de> for Better {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "lower" => Ok(Better::Lower),
            _ => Ok(Better::Higher),
        }
    }
}

fn herald_client() -> String {
    crate::spec::Generator::HeraldClient.name().into()
}

impl ScenarioResult {
    pub(crate) fn new(scenario: &Scenario, target: Target, report: &LoadReport) -> anyhow::Result<Self> {
        let best = report.best_step();
        let peak = report.peak_step().or(report.steps.first());
        Ok(Self {
            scenario: scenario.name.into(),
            description: scenario.description.into(),
            cut: scenario.cut.map(Into::into),
            target: target.name().into(),
            generator: report.generator.name().into(),
            metric: scenario.metric.into(),
            better: scenario.better,
            headline: scenario.headline(report),
            p99_ms: peak.filter(|s| s.expected > 0).map(|s| s.latency_ms.p99),
            rate_held: best.and_then(|s| s.rate),
            idle_cpu: report.idle_server_cpu,
            gaps: report.gaps,
            duplicates: report.duplicates,
            errors: report.errors + report.publish_errors + u64::from(report.connect.failed),
            load: serde_json::to_value(report)?,
        })
    }
}

pub(crate) fn num(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{:.0}", x)
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(","),
        a if a >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("–".into(), num)
}

/// A load's steps as a markdown table, with its connection and memory figures above.
pub(crate) fn load_markdown(report: &LoadReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**{}**{}, {} × {} on {}, {} publisher(s), {}-byte payloads, {} worker process(es), subscribers on {}\n",
        report.target.name(),
        match report.nodes {
            1 => String::new(),
            n => format!(" ({n} nodes)"),
        },
        report.subscribers,
        report.transport.name(),
        report.layout,
        report.publishers,
        report.payload_bytes,
        report.workers,
        report.generator.name()
    );
    let c = &report.connect;
    let _ = writeln!(
        out,
        "- connections: {} opened, {} failed, in {:.2} s ({} /s)",
        c.opened,
        c.failed,
        c.secs,
        num(c.per_sec)
    );
    if let Some(m) = &report.memory {
        let _ = writeln!(
            out,
            "- server memory: RSS {:.1} → {:.1} MiB ({} B per connection), PSS {} B per connection, {} process(es)",
            m.before.rss_bytes as f64 / 1048576.0,
            m.after.rss_bytes as f64 / 1048576.0,
            num(m.rss_per_connection_bytes),
            num(m.pss_per_connection_bytes),
            m.after.processes
        );
    }
    if let Some(cpu) = report.idle_server_cpu {
        let _ = writeln!(out, "- server CPU at rest: {:.2}% of a core", cpu * 100.0);
    }
    let _ = writeln!(
        out,
        "- gaps {}, duplicates {}, subscriber errors {}, publish errors {}",
        report.gaps, report.duplicates, report.errors, report.publish_errors
    );
    for sample in &report.error_samples {
        let _ = writeln!(out, "  - e.g. `{sample}`");
    }
    if !report.steps.is_empty() {
        out.push_str("\n| rate asked /s | published /s | delivered / expected | deliveries /s | p50 ms | p90 | p99 | p99.9 | max | server CPU | bench CPU | p99 < limit? |\n");
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|\n");
        for s in &report.steps {
            let l = &s.latency_ms;
            let _ = writeln!(
                out,
                "| {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {:.0}% | {:.0}% | {} |",
                s.rate.map_or("max".into(), num),
                num(s.publish_rate),
                s.delivered,
                s.expected,
                num(s.deliveries_per_sec),
                num(l.p50),
                num(l.p90),
                num(l.p99),
                num(l.p999),
                num(l.max),
                s.server_cpu * 100.0,
                s.bench_cpu * 100.0,
                match (s.warmup, s.held, s.kept_up) {
                    (true, _, _) => "warm-up",
                    (_, true, _) => "yes",
                    (_, false, true) => "kept up",
                    _ => "**no**",
                }
            );
        }
    }
    out
}

/// A blip run as markdown: what was done, then one table of what it cost.
pub(crate) fn blip_markdown(report: &BlipReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "**redis-blip, {}**: {} WebSocket subscribers on {} channels, {} messages of history per channel, {} msg/s \
         while the blip happens; blip: `{}` ({:.2} s)\n",
        report.label,
        report.subscribers,
        report.channels,
        report.history_per_channel,
        num(report.rate),
        report.blip_command,
        report.blip_secs
    );
    let c = &report.connect;
    let _ = writeln!(
        out,
        "- history: {} published in {:.1} s ({} errors); connections: {} opened, {} failed, in {:.2} s",
        report.history.published, report.history.secs, report.history.errors, c.opened, c.failed, c.secs
    );
    let s = &report.steady;
    let _ = writeln!(out, "- steady publishing: {} published, {} errors", s.published, s.errors);
    for sample in s.error_samples.iter().chain(&c.error_samples) {
        let _ = writeln!(out, "  - e.g. `{sample}`");
    }
    let (b, a) = (&report.counters_before, &report.counters_after);
    let live = &report.live_again;
    let ms = |v: Option<f64>| v.map_or("–".into(), num);
    let rows: [(&str, String, String); 10] = [
        ("slow-consumer disconnects (ws)", b.slow_consumer_ws.to_string(), a.slow_consumer_ws.to_string()),
        ("history reads", b.history_reads.to_string(), a.history_reads.to_string()),
        ("catch-up reads by subscribers", b.catch_up_reads.to_string(), a.catch_up_reads.to_string()),
        ("catch-up reads by the node", b.node_catch_up_reads.to_string(), a.node_catch_up_reads.to_string()),
        ("subscribers that reconnected", "".into(), report.subscribers_reconnected.to_string()),
        ("reconnects in all", "".into(), report.reconnects.to_string()),
        ("live again: subscribers", "".into(), format!("{} of {}", live.live, live.subscribers)),
        (
            "live again after Redis is back, ms: p50 / p90 / p99",
            "".into(),
            format!("{} / {} / {}", ms(live.p50_ms), ms(live.p90_ms), ms(live.p99_ms)),
        ),
        ("**everyone live again**, ms after Redis is back", "".into(), ms(live.all_ms)),
        (
            "delivery latency, ms: p50 / p99 / max",
            format!(
                "{} / {} / {}",
                num(report.latency_before_ms.p50),
                num(report.latency_before_ms.p99),
                num(report.latency_before_ms.max)
            ),
            format!(
                "{} / {} / {}",
                num(report.latency_after_ms.p50),
                num(report.latency_after_ms.p99),
                num(report.latency_after_ms.max)
            ),
        ),
    ];
    out.push_str("\n| | before the blip (opening included) | from the blip to the end |\n|---|---:|---:|\n");
    for (what, before, after) in rows {
        let _ = writeln!(out, "| {what} | {before} | {after} |");
    }
    let _ = writeln!(
        out,
        "\n- delivered {} of {} expected; gaps {}, duplicates {}, subscriber errors {}",
        report.delivered, report.expected, report.gaps, report.duplicates, report.errors
    );
    for sample in &report.error_samples {
        let _ = writeln!(out, "  - e.g. `{sample}`");
    }
    for (reason, n) in &report.drops {
        let _ = writeln!(out, "- dropped {n}×: `{reason}`");
    }
    out
}

/// Reads every `*.json` result in `dir`.
pub(crate) fn read_results(dir: &Path) -> anyhow::Result<Vec<ScenarioResult>> {
    let mut results = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.extension().is_some_and(|e| e == "json") {
            if let Ok(result) = serde_json::from_slice::<ScenarioResult>(&std::fs::read(&path)?) {
                results.push(result);
            }
        }
    }
    // In the order the scenarios run.
    results.sort_by_key(|r| crate::scenarios::ALL.iter().position(|s| s.name == r.scenario));
    Ok(results)
}

/// The names of the scenarios in `results`, each once, in order.
fn scenario_names(results: &[ScenarioResult]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        if !names.contains(&r.scenario.as_str()) {
            names.push(&r.scenario);
        }
    }
    names
}

/// The headline table of the scenarios measured against `herald-bench floor` too: each server's µs of CPU per
/// delivery and its multiple of the floor's, measured in the same run. Empty when no floor result is there.
fn floor_markdown(results: &[ScenarioResult], pair: (Target, Target), peer: &str) -> String {
    let mut out = String::new();
    for name in scenario_names(results) {
        let of = |target: Target| results.iter().find(|r| r.scenario == name && r.target == target.name());
        let Some(floor) = of(Target::Floor) else { continue };
        if out.is_empty() {
            let p = &peer[..1];
            out = format!(
                "| scenario | µs server CPU per delivery: Herald | {peer} | floor | **Herald × floor** | {peer} × floor | p99 ms H / {p} / floor | gaps+dups H / {p} / floor |\n|---|---:|---:|---:|---:|---:|---:|---:|\n"
            );
        }
        let (h, n) = (of(pair.0), of(pair.1));
        let times = |r: Option<&ScenarioResult>| match (r.and_then(|r| r.headline), floor.headline) {
            (Some(x), Some(f)) if f > 0.0 => format!("{:.2}×", x / f),
            _ => "–".into(),
        };
        let three = |f: &dyn Fn(&ScenarioResult) -> String| {
            format!("{} / {} / {}", h.map_or("–".into(), f), n.map_or("–".into(), f), f(floor))
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | **{}** | {} | {} | {} |",
            opt(h.and_then(|r| r.headline)),
            opt(n.and_then(|r| r.headline)),
            opt(floor.headline),
            times(h),
            times(n),
            three(&|r| opt(r.p99_ms)),
            three(&|r| (r.gaps + r.duplicates).to_string()),
        );
    }
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// The ratio table: one row per scenario, Herald's figure, the peer's, and Herald/peer, for the targets of
/// `pair` (Herald's first: Herald and Nchan, or Herald's Pusher protocol and Soketi).
pub(crate) fn summary_markdown(results: &[ScenarioResult], pair: (Target, Target)) -> String {
    let peer = match pair.1 {
        Target::Soketi => "Soketi",
        _ => "Nchan",
    };
    let p = &peer[..1];
    let mut out = floor_markdown(results, pair, peer);
    out += &format!(
        "| scenario | figure | Herald | {peer} | Herald/{peer} | Herald ahead? | p99 ms there H / {p} | rate held with p99 < 100 ms H / {p} | gaps+dups H / {p} | errors H / {p} |\n|---|---|---:|---:|---:|:--:|---:|---:|---:|---:|\n",
    );
    let mut cuts = Vec::new();
    for name in scenario_names(results) {
        let of = |target: &str| results.iter().find(|r| r.scenario == name && r.target == target);
        let (h, n) = (of(pair.0.name()), of(pair.1.name()));
        let Some(any) = h.or(n) else { continue };
        let (hv, nv) = (h.and_then(|r| r.headline), n.and_then(|r| r.headline));
        let ratio = match (hv, nv) {
            (Some(h), Some(n)) if n > 0.0 => Some(h / n),
            _ => None,
        };
        let ahead = match (hv, nv, ratio) {
            (_, _, Some(r)) => match (any.better, r >= 1.0) {
                (Better::Higher, true) | (Better::Lower, false) => "yes",
                _ => "**no**",
            },
            // One server reached no figure at all (e.g. held no rate): the other is ahead.
            (None, Some(_), None) if h.is_some() => "**no**",
            (Some(_), None, None) if n.is_some() => "yes",
            _ => "–",
        };
        let pair = |f: &dyn Fn(&ScenarioResult) -> String| {
            format!("{} / {}", h.map_or("–".into(), f), n.map_or("–".into(), f))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            name,
            any.metric,
            opt(hv),
            opt(nv),
            ratio.map_or("–".into(), |r| format!("{r:.2}×")),
            ahead,
            pair(&|r| opt(r.p99_ms)),
            pair(&|r| opt(r.rate_held)),
            pair(&|r| (r.gaps + r.duplicates).to_string()),
            pair(&|r| r.errors.to_string()),
        );
        if let Some(cut) = &any.cut {
            cuts.push(format!("- {name}: cut down — {cut}"));
        }
    }
    if !cuts.is_empty() {
        out.push('\n');
        out.push_str(&cuts.join("\n"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_numbers_get_thousands_separators_and_small_ones_decimals() {
        assert_eq!(num(1_234_567.4), "1,234,567");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
    }

    fn result(scenario: &str, target: &str, headline: f64, better: Better) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.into(),
            description: String::new(),
            cut: None,
            target: target.into(),
            generator: herald_client(),
            metric: "m".into(),
            better,
            headline: Some(headline),
            p99_ms: None,
            rate_held: None,
            idle_cpu: None,
            gaps: 0,
            duplicates: 0,
            errors: 0,
            load: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_summary_divides_herald_by_nchan_and_says_who_is_ahead_by_the_figures_sense() {
        let table = summary_markdown(
            &[
                result("fanout", "herald", 200.0, Better::Higher),
                result("fanout", "nchan", 100.0, Better::Higher),
                result("idle", "herald", 12.0, Better::Lower),
                result("idle", "nchan", 6.0, Better::Lower),
            ],
            (Target::Herald, Target::Nchan),
        );
        assert!(table.contains("| fanout | m | 200 | 100 | 2.00× | yes |"), "{table}");
        assert!(table.contains("| idle | m | 12.0 | 6.00 | 2.00× | **no** |"), "{table}");
    }

    #[test]
    fn a_server_that_reached_no_figure_is_behind_the_one_that_did() {
        let mut none = result("mixed", "herald", 0.0, Better::Higher);
        none.headline = None;
        let table =
            summary_markdown(&[none, result("mixed", "nchan", 100.0, Better::Higher)], (Target::Herald, Target::Nchan));
        assert!(table.contains("| mixed | m | – | 100 | – | **no** |"), "{table}");
    }

    #[test]
    fn scenarios_measured_against_the_floor_lead_with_each_servers_multiple_of_it() {
        let table = summary_markdown(
            &[
                result("cpu-ws-2k", "herald", 6.0, Better::Lower),
                result("cpu-ws-2k", "nchan", 5.0, Better::Lower),
                result("cpu-ws-2k", "floor", 4.0, Better::Lower),
                result("fanout", "herald", 200.0, Better::Higher),
                result("fanout", "nchan", 100.0, Better::Higher),
            ],
            (Target::Herald, Target::Nchan),
        );
        let floor = table.find("| cpu-ws-2k | 6.00 | 5.00 | 4.00 | **1.50×** | 1.25× |").expect(&table);
        let ratios = table.find("| cpu-ws-2k | m | 6.00 | 5.00 | 1.20× | **no** |").expect(&table);
        assert!(floor < ratios, "the floor table comes first: {table}");
        assert!(!table.contains("| fanout | 200"), "only scenarios with a floor result: {table}");
        let without =
            summary_markdown(&[result("fanout", "herald", 2.0, Better::Higher)], (Target::Herald, Target::Nchan));
        assert!(without.starts_with("| scenario | figure |"), "{without}");
    }

    #[test]
    fn the_pusher_summary_pairs_heralds_pusher_protocol_with_soketi() {
        let table = summary_markdown(
            &[
                result("pusher-idle", "herald-pusher", 3.0, Better::Lower),
                result("pusher-idle", "soketi", 6.0, Better::Lower),
                result("pusher-idle", "herald", 1.0, Better::Lower),
            ],
            (Target::HeraldPusher, Target::Soketi),
        );
        assert!(table.contains("| Herald | Soketi | Herald/Soketi |"), "{table}");
        assert!(table.contains("| pusher-idle | m | 3.00 | 6.00 | 0.50× | yes |"), "{table}");
    }
}
