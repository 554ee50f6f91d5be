//! `tessera db show|export|import`: the tuning database (which tiles launches will use), and
//! moving a warm one between machines or into an application.

use std::path::PathBuf;

use clap::Subcommand;
use tessera::outputs::check_output_path;
use tessera::runtime::tuning::TuningDb;
use tessera::TesseraError;

use crate::Result;

#[derive(Subcommand)]
pub enum DbCommand {
    /// List the entries (default database, or --tuning-db).
    Show {
        #[arg(long)]
        tuning_db: Option<PathBuf>,
    },
    /// Write the database's entries to FILE (merged into FILE if it exists).
    Export {
        file: PathBuf,
        #[arg(long)]
        tuning_db: Option<PathBuf>,
    },
    /// Add the entries of FILE to the database (FILE's entries win).
    Import {
        file: PathBuf,
        #[arg(long)]
        tuning_db: Option<PathBuf>,
    },
}

fn open(path: Option<PathBuf>) -> TuningDb {
    let path = path.unwrap_or_else(TuningDb::default_path);
    let (db, warning) = TuningDb::open(path);
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    db
}

pub fn run(command: DbCommand) -> Result<()> {
    match command {
        DbCommand::Show { tuning_db } => {
            let db = open(tuning_db);
            println!("{}: {} entries", db.path().map_or("(memory)".into(), |p| p.display().to_string()), db.len());
            let mut rows: Vec<String> = db
                .entries()
                .map(|e| {
                    let shape: Vec<String> = e.key.shape.iter().map(u64::to_string).collect();
                    format!(
                        "  {:<10} {:<16} {:<24} {:>10.4} ms {:>8.1} {}  {} (sm_{}{})",
                        e.key.spec.family(),
                        shape.join("x"),
                        e.tile.to_string(),
                        e.median_ms,
                        e.throughput,
                        e.unit,
                        e.key.device.name,
                        e.key.device.compute_capability.0,
                        e.key.device.compute_capability.1
                    )
                })
                .collect();
            rows.sort();
            for r in rows {
                println!("{r}");
            }
            Ok(())
        }
        DbCommand::Export { file, tuning_db } => {
            check_output_path("FILE", &file)?;
            let n = open(tuning_db).export(&file)?;
            eprintln!("{} now holds {n} entries", file.display());
            Ok(())
        }
        DbCommand::Import { file, tuning_db } => {
            let mut db = open(tuning_db);
            if db.path().is_none() {
                return Err(TesseraError::input("--tuning-db", "no database file to import into"));
            }
            let n = db.import(&file)?;
            db.save()?;
            eprintln!("imported {n} entries; {} now holds {}", db.path().map_or(String::new(), |p| p.display().to_string()), db.len());
            Ok(())
        }
    }
}
