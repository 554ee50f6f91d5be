use tessera_derive::TuneShape;

#[derive(Debug, TuneShape)]
struct Shape {
    #[bucket(pow2)]
    m: usize,
    n: usize,
}

fn main() {}
