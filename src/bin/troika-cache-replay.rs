//! troika-cache-replay: replays block I/O traces through the SSD read cache's replacement
//! policies (the tier's own code, `troika::ssd::policy`) at several cache sizes, and prints
//! each policy's hit ratio and index bytes per cached block as a Markdown table.
//!
//! Traces: MSR Cambridge CSV files or plain `timestamp,offset,size,op` CSV files
//! (`--trace`), or the synthetic mixes (the default, or `--mix`); `--generate KIND --out
//! FILE` writes a synthetic trace as a plain CSV. See `test-rigs/cache-replay.sh`.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use troika::say;
use troika::ssd::policy::replay::{distinct_blocks, replay_every_policy};
use troika::ssd::policy::trace_files::{read_trace, write_plain};
use troika::ssd::policy::traces::{Mix, Request, TraceSpec, generate};
use troika::ssd::policy::{chosen, every_policy};

#[derive(Parser)]
#[command(about = "Replays block I/O traces through the SSD cache's replacement policies")]
struct Args {
    /// Trace files to replay (MSR Cambridge or timestamp,offset,size,op CSV).
    #[arg(long)]
    trace: Vec<String>,
    /// Synthetic mixes to replay when no --trace is given (default: all of them):
    /// zipf-SKEW, loop, scan, moving, zipf-0.9-rw.
    #[arg(long)]
    mix: Vec<String>,
    /// Write this synthetic mix as a plain CSV (with --out) instead of replaying.
    #[arg(long, requires = "out")]
    generate: Option<String>,
    /// Where --generate writes.
    #[arg(long)]
    out: Option<String>,
    /// Cache sizes: a percentage of the trace's distinct blocks ("5%") or a block count.
    #[arg(long, value_delimiter = ',', default_value = "1%,5%,10%")]
    sizes: Vec<String>,
    /// Requests in a synthetic trace.
    #[arg(long, default_value_t = 2_000_000)]
    requests: usize,
    /// Distinct blocks the synthetic Zipf parts draw from.
    #[arg(long, default_value_t = 500_000)]
    universe: u64,
    /// Seed of the synthetic traces.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Reads at most this many requests of each trace file.
    #[arg(long, default_value_t = usize::MAX)]
    limit: usize,
}

/// A cache size as given.
enum Size {
    Percent(f64),
    Blocks(u32),
}

fn parse_size(text: &str) -> Result<Size, String> {
    let bad = || format!("cache size {text:?}: give a percentage like 5% or a block count");
    match text.trim().strip_suffix('%') {
        Some(percent) => {
            let percent: f64 = percent.parse().map_err(|_| bad())?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(bad());
            }
            Ok(Size::Percent(percent))
        }
        None => text.trim().parse().map(Size::Blocks).map_err(|_| bad()),
    }
}

fn blocks_for(size: &Size, distinct: u64) -> u32 {
    match *size {
        Size::Percent(percent) => {
            let blocks = (distinct as f64 * percent / 100.0).round() as u64;
            blocks.clamp(1, u64::from(u32::MAX)) as u32
        }
        Size::Blocks(blocks) => blocks,
    }
}

fn size_label(size: &Size) -> String {
    match size {
        Size::Percent(percent) => format!("{percent}%"),
        Size::Blocks(_) => "fixed".to_string(),
    }
}

/// The table's header: one hit-ratio column and one bytes-per-block column per policy.
fn print_header() {
    let names: Vec<&str> = every_policy(1).iter().map(|policy| policy.name()).collect();
    let ratios: Vec<String> = names.iter().map(|name| format!("{name} hit %")).collect();
    let bytes: Vec<String> = names.iter().map(|name| format!("{name} B/blk")).collect();
    println!(
        "| mix | requests | distinct blocks | size | cache blocks | {} | {} | {} ≥ lru, ≥ arc − 1 |",
        ratios.join(" | "),
        bytes.join(" | "),
        chosen(1).name()
    );
    let columns = 5 + 2 * names.len() + 1;
    println!("|{}", "---|".repeat(columns));
}

/// One row; returns whether the chosen policy met the acceptance on it.
fn print_row(label: &str, trace: &[Request], distinct: u64, size: &Size) -> bool {
    let capacity = blocks_for(size, distinct);
    let results = replay_every_policy(trace, capacity);
    let ratio = |name: &str| {
        results
            .iter()
            .find(|(each, _)| *each == name)
            .map_or(0.0, |(_, stats)| stats.hit_ratio() * 100.0)
    };
    let chosen_ratio = ratio(chosen(1).name());
    let met = chosen_ratio >= ratio("lru") && chosen_ratio >= ratio("arc") - 1.0;
    let ratios: Vec<String> = results
        .iter()
        .map(|(_, stats)| format!("{:.2}", stats.hit_ratio() * 100.0))
        .collect();
    let bytes: Vec<String> = results
        .iter()
        .map(|(_, stats)| format!("{:.1}", stats.bytes_per_block()))
        .collect();
    println!(
        "| {label} | {} | {distinct} | {} | {capacity} | {} | {} | {} |",
        trace.len(),
        size_label(size),
        ratios.join(" | "),
        bytes.join(" | "),
        if met { "yes" } else { "NO" }
    );
    met
}

fn load(args: &Args) -> Result<Vec<(String, Vec<Request>)>, String> {
    if !args.trace.is_empty() {
        return args
            .trace
            .iter()
            .map(|path| {
                let file = File::open(path)
                    .map_err(|error| format!("cannot open trace {path}: {error}"))?;
                let (_, trace) = read_trace(BufReader::new(file), path, args.limit)?;
                Ok((path.clone(), trace))
            })
            .collect();
    }
    let mixes: Vec<Mix> = if args.mix.is_empty() {
        Mix::standard()
    } else {
        args.mix
            .iter()
            .map(|mix| mix.parse())
            .collect::<Result<_, _>>()?
    };
    Ok(mixes
        .into_iter()
        .map(|mix| (mix.to_string(), generate(&spec(args, mix))))
        .collect())
}

fn spec(args: &Args, mix: Mix) -> TraceSpec {
    TraceSpec {
        mix,
        requests: args.requests,
        universe: args.universe,
        seed: args.seed,
    }
}

fn write_generated(args: &Args, kind: &str) -> Result<(), String> {
    let mix: Mix = kind.parse()?;
    let out = args.out.as_deref().ok_or("--generate needs --out FILE")?;
    let trace = generate(&spec(args, mix));
    let file = File::create(out).map_err(|error| format!("cannot create {out}: {error}"))?;
    write_plain(BufWriter::new(file), &trace).map_err(|error| format!("writing {out}: {error}"))?;
    say!("wrote {} requests of {mix} to {out}", trace.len());
    Ok(())
}

fn run(args: &Args) -> Result<bool, String> {
    if let Some(kind) = &args.generate {
        write_generated(args, kind)?;
        return Ok(true);
    }
    let sizes: Vec<Size> = args
        .sizes
        .iter()
        .map(|size| parse_size(size))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let traces = load(args)?;
    print_header();
    let mut all_met = true;
    for (label, trace) in &traces {
        let distinct = distinct_blocks(trace);
        for size in &sizes {
            all_met &= print_row(label, trace, distinct, size);
        }
    }
    say!(
        "replayed {} trace(s) in {:.1} s",
        traces.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(all_met)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            say!("the chosen policy missed the acceptance (≥ lru, ≥ arc − 1) on a row marked NO");
            ExitCode::from(1)
        }
        Err(error) => {
            say!("troika-cache-replay: {error}");
            ExitCode::from(2)
        }
    }
}
