//! Parses PTX files and prints their entries: `cargo run -p tessera-sim --example parse_ptx -- a.ptx ...`.
fn main() {
    for path in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{path}: {e}");
                continue;
            }
        };
        let t = std::time::Instant::now();
        match tessera_sim::Module::parse(&text) {
            Ok(m) => {
                for e in m.entries() {
                    println!(
                        "{path}: {e}: {} instructions, {} register slots, params {:?}, parsed in {:?}",
                        m.instruction_count(&e).unwrap_or(0),
                        m.register_slots(&e).unwrap_or(0),
                        m.entry_params(&e).unwrap_or_default(),
                        t.elapsed()
                    );
                }
            }
            Err(e) => println!("{path}: {e}"),
        }
    }
}
