use tessera_derive::TuneShape;

#[derive(Debug, TuneShape)]
struct Shape {
    #[bucket(log2)]
    m: usize,
}

fn main() {}
