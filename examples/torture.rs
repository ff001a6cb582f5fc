//! The torture run: workers on all five primitives, a seeded nemesis
//! (kill, pause, restart, partition a minority, latency, dropped replies,
//! script flush, per-client views, newcomers) and a safety check of the
//! whole history at the end.
//!
//! Run: `cargo run --release --example torture -- --seconds 600 --seed 7`
//! (also `--nodes N`, `--workers M`, `--ttl-ms T`, `--dump FILE` to write
//! the whole history, `--write-schedule FILE` to write the fault schedule
//! and `--replay FILE` to carry out a schedule file instead of planning one).
//! It exits with status 1 when it finds a violation; run again with the
//! printed seed, or replay its schedule, to get the same faults.

use std::time::Duration;

use quorate::testkit::torture::{self, Torture};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (torture, dump) = parse(std::env::args().skip(1))?;
    println!(
        "torturing {} nodes for {:?} (seed {})...",
        torture.nodes, torture.duration, torture.seed
    );
    if let Some(path) = &torture.replay_schedule {
        println!("replaying the schedule in {}", path.display());
    }
    let report = torture::run(torture).await?;
    println!("{report}");
    if let Some(path) = dump {
        std::fs::write(&path, report.history.to_string())?;
        println!("history written to {path}");
    }
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<(Torture, Option<String>), String> {
    let mut torture = Torture::default();
    let mut dump = None;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dump" => dump = Some(value),
            "--write-schedule" => torture.write_schedule = Some(value.into()),
            "--replay" => torture.replay_schedule = Some(value.into()),
            _ => number(&mut torture, &flag, &value)?,
        }
    }
    Ok((torture, dump))
}

/// The flags with a number.
fn number(torture: &mut Torture, flag: &str, value: &str) -> Result<(), String> {
    let number: u64 = value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
    match flag {
        "--nodes" => torture.nodes = number as usize,
        "--workers" => torture.workers = number as usize,
        "--seconds" => torture.duration = Duration::from_secs(number),
        "--seed" => torture.seed = number,
        "--ttl-ms" => torture.ttl = Duration::from_millis(number),
        _ => return Err(format!("unknown flag {flag}; see the example's header")),
    }
    Ok(())
}
