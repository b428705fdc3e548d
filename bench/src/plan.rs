//! Which scenarios a command runs, and running them: every peer in alternation, round after
//! round (A B C, A B C, ...), into one report.
//!
//! A proxy's failure in one scenario is noted under the table and the rest goes on; the
//! baseline failing is fatal, since nothing could be compared with it. Token sources (the file,
//! redis-server) are set up before the first round, when a `--token-proxy` needs them, and
//! removed after the last. `sessions` (wsproxy's on-demand sessions) and `cluster` (several instances
//! sharing them through Redis) have their own modules and tables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::cli::{Command, Common, ConnectsArgs, IdleArgs, RttArgs, ThroughputArgs};
use crate::peer::Peer;
use crate::report::{Report, issue_goals};
use crate::tls::Tls;
use crate::tokens::{TokenSet, Tokens};
use crate::{cluster, connects, idle, rtt, sessions, throughput};

#[derive(Default)]
struct Plan {
    throughput: Option<throughput::Options>,
    rtt: Option<rtt::Options>,
    connects: Option<connects::Options>,
    idle: Option<idle::Options>,
}

pub async fn run(command: Command) -> Result<(), String> {
    let (common, plan) = match command {
        Command::Throughput(args) => {
            let tls = args.tls.as_deref().map(Tls::load).transpose()?.map(Arc::new);
            let plan = Plan {
                throughput: Some(throughput_options(&args.throughput, &args.common, tls)),
                ..Plan::default()
            };
            (args.common, plan)
        }
        Command::Rtt(args) => {
            let plan = Plan {
                rtt: Some(rtt_options(&args.rtt)),
                ..Plan::default()
            };
            (args.common, plan)
        }
        Command::Connects(args) => {
            let plan = Plan {
                connects: Some(connects_options(&args.connects)),
                ..Plan::default()
            };
            (args.common, plan)
        }
        Command::Idle(args) => {
            let plan = Plan {
                idle: Some(idle_options(&args.idle)),
                ..Plan::default()
            };
            (args.common, plan)
        }
        Command::Relay(_) | Command::EchoServer(_) => return Err("not a scenario".into()),
        Command::Sessions(args) => return sessions::run(args).await,
        Command::Cluster(args) => return cluster::run(args).await,
        Command::Soak(args) => return crate::soak::run(&args).await,
        Command::All(args) => {
            let plan = Plan {
                throughput: Some(throughput_options(&args.throughput, &args.common, None)),
                rtt: Some(rtt_options(&args.rtt)),
                connects: Some(connects_options(&args.connects)),
                idle: Some(idle_options(&args.idle)),
            };
            (args.common, plan)
        }
    };
    execute(&common, &plan).await
}

fn throughput_options(args: &ThroughputArgs, common: &Common, tls: Option<Arc<Tls>>) -> throughput::Options {
    throughput::Options::new(args.size_mib, args.client, common.stall_secs, &args.directions, tls)
}

fn rtt_options(args: &RttArgs) -> rtt::Options {
    rtt::Options {
        round_trips: args.round_trips as usize,
        conns: args.rtt_conns as usize,
        secs: Duration::from_secs(args.rtt_secs),
    }
}

fn connects_options(args: &ConnectsArgs) -> connects::Options {
    connects::Options {
        concurrency: args.connects_concurrency as usize,
        secs: Duration::from_secs(args.connects_secs),
        tokens: TokenSet {
            count: args.tokens as usize,
        },
        token_proxies: args.token_proxies.clone(),
    }
}

fn idle_options(args: &IdleArgs) -> idle::Options {
    idle::Options {
        conns: args.idle_conns as usize,
        budget_mib: args.idle_budget_mib,
    }
}

async fn execute(common: &Common, plan: &Plan) -> Result<(), String> {
    let peers = Peer::all(&common.proxies)?;
    let token_proxies = plan.connects.as_ref().map_or(&[][..], |o| &o.token_proxies[..]);
    let sources = Peer::token_sources(&common.proxies, token_proxies)?;
    let tokens = match (&plan.connects, sources.is_empty()) {
        (Some(options), false) => Some(Tokens::start(options.tokens, &sources).await?),
        _ => None,
    };
    let outcome = measure_all(common, plan, &peers, tokens.as_ref()).await;
    if let Some(tokens) = tokens {
        tokens.stop().await;
    }
    outcome
}

/// Runs every scenario of `plan` over `peers` (and the token proxies, with `tokens`).
async fn measure_all(common: &Common, plan: &Plan, peers: &[Peer<'_>], tokens: Option<&Tokens>) -> Result<(), String> {
    let token_peers: Vec<Peer<'_>> = match (&plan.connects, tokens) {
        (Some(options), Some(tokens)) => options
            .token_proxies
            .iter()
            .map(|spec| Peer::Tokens(spec, tokens))
            .collect(),
        _ => Vec::new(),
    };
    let (title, settings) = describe(common, plan);
    let mut report = Report::new(title.clone(), peers, settings);
    if let Some(options) = &plan.throughput {
        options.rows(&mut report);
    }
    if let Some(options) = &plan.rtt {
        options.rows(&mut report);
    }
    if let Some(options) = &plan.connects {
        options.rows(&mut report);
    }
    if let Some(options) = &plan.idle {
        options.rows(&mut report);
    }
    if let Some(options) = &plan.throughput {
        options.cpu_rows(&mut report);
    }
    if let Some(options) = &plan.rtt {
        options.cpu_rows(&mut report);
    }
    if let Some(options) = &plan.connects {
        options.cpu_rows(&mut report);
    }
    // The targets are for ws://; a wss:// run is reported without them.
    if plan.throughput.as_ref().is_none_or(|o| o.tls.is_none()) {
        report.goals(
            "issue 5 and the token issue",
            issue_goals(plan.idle.as_ref().map_or(0, |idle| idle.conns)),
        );
    }
    eprintln!("{title}\neach line is one run");

    let rounds = common.rounds;
    let timed = plan.throughput.is_some() || plan.rtt.is_some() || plan.connects.is_some();
    for round in (1..=rounds).filter(|_| timed) {
        for peer in peers {
            if let Some(options) = &plan.throughput {
                let outcome = throughput::measure_into(peer, options, &mut report, (round, rounds)).await;
                settle(peer, "throughput", outcome, &mut report)?;
            }
            if let Some(options) = &plan.rtt {
                let outcome = rtt::measure_into(peer, options, &mut report, (round, rounds)).await;
                settle(peer, "rtt", outcome, &mut report)?;
            }
            if let Some(options) = &plan.connects {
                let outcome = connects::measure_into(peer, options, &mut report, (round, rounds)).await;
                settle(peer, "connects", outcome, &mut report)?;
                // Right after the same proxy without tokens, so the ratio compares like with like.
                for token_peer in token_peers.iter().filter(|p| p.name() == peer.name()) {
                    let outcome = connects::measure_into(token_peer, options, &mut report, (round, rounds)).await;
                    let scenario = token_peer.token_source().map(|s| s.plugin()).unwrap_or_default();
                    settle(token_peer, &format!("{scenario} connects"), outcome, &mut report)?;
                }
            }
        }
    }
    if let Some(options) = &plan.idle {
        // Memory is not noisy the way rates are: with other scenarios, once is enough.
        let idle_rounds = if timed { 1 } else { rounds };
        for _ in 0..idle_rounds {
            for peer in peers {
                let outcome = idle::measure_into(peer, options, &mut report).await;
                settle(peer, "idle", outcome, &mut report)?;
            }
        }
    }
    finish(&report, common.json.as_deref())
}

/// The table's title and the settings for the JSON file.
fn describe(common: &Common, plan: &Plan) -> (String, serde_json::Value) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut parts = Vec::new();
    let mut settings = json!({ "rounds": common.rounds });
    if let Some(o) = &plan.throughput {
        let scheme = if o.tls.is_some() { "wss://" } else { "ws://" };
        parts.push(format!(
            "throughput {} MiB per run over {scheme} ({} client)",
            o.size >> 20,
            o.client.name()
        ));
        settings["throughput"] = json!({
            "size_mib": o.size >> 20,
            "message_bytes": throughput::MESSAGE,
            "tls": o.tls.is_some(),
            "client": o.client.name(),
            "directions": o.directions.iter().map(|d| d.name()).collect::<Vec<_>>(),
        });
    }
    if let Some(o) = &plan.rtt {
        parts.push(format!(
            "rtt {} × {} B round trips, {} conns × {} s",
            o.round_trips,
            rtt::PAYLOAD,
            o.conns,
            o.secs.as_secs()
        ));
        settings["rtt"] = json!({
            "round_trips": o.round_trips,
            "payload_bytes": rtt::PAYLOAD,
            "conns": o.conns,
            "secs": o.secs.as_secs(),
        });
    }
    if let Some(o) = &plan.connects {
        let sources = o.token_sources();
        let with_tokens = match sources.is_empty() {
            true => String::new(),
            false => format!(
                ", also with {} tokens ({})",
                o.tokens.count,
                sources.iter().map(|s| s.plugin()).collect::<Vec<_>>().join(", ")
            ),
        };
        parts.push(format!(
            "connects {} at a time × {} s{with_tokens}",
            o.concurrency,
            o.secs.as_secs()
        ));
        let token_proxies: Vec<_> = o
            .token_proxies
            .iter()
            .map(|spec| json!({ "name": spec.name, "command": spec.template }))
            .collect();
        settings["connects"] = json!({
            "concurrency": o.concurrency,
            "secs": o.secs.as_secs(),
            "tokens": o.tokens.count,
            "token_proxies": token_proxies,
        });
    }
    if let Some(o) = &plan.idle {
        parts.push(format!("idle {} conns", o.conns));
        settings["idle"] = json!({ "conns": o.conns, "budget_mib": o.budget_mib });
    }
    let title = format!(
        "wsproxy-bench: {} round(s) on {cpus} CPUs, 127.0.0.1; {}",
        common.rounds,
        parts.join("; ")
    );
    (title, settings)
}

/// Lets a proxy's failure through as a note; returns the baseline's as the error.
fn settle(peer: &Peer<'_>, scenario: &str, outcome: Result<(), String>, report: &mut Report) -> Result<(), String> {
    match (outcome, peer) {
        (Ok(()), _) => Ok(()),
        (Err(e), Peer::NoProxy) => Err(format!("{} {scenario}: {e}", peer.name())),
        (Err(e), Peer::Proxy(_) | Peer::Tokens(..)) => {
            eprintln!("  {} {scenario}: FAILED: {e}", peer.name());
            let first = e.lines().next().unwrap_or_default();
            report.note(format!("{} {scenario} failed: {first}", peer.name()));
            Ok(())
        }
    }
}

/// Prints the table and writes the JSON file, if asked.
pub fn finish(report: &Report, json: Option<&Path>) -> Result<(), String> {
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.json()).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
