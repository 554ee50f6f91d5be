#[tessera::attention(dtype = f64, head_dim = 64, heads_q = 8)]
struct Attention;

fn main() {}
