use tessera_derive::TuneShape;

#[derive(Debug, TuneShape)]
struct Shape {
    #[bucket(pow2)]
    m: u32,
}

fn main() {}
