#[tessera::attention(dtype = bf16, head_dim = 100, heads_q = 8)]
struct Attention;

fn main() {}
