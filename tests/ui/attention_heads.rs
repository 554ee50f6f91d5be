#[tessera::attention(dtype = f16, head_dim = 64, heads_q = 6, heads_kv = 4)]
struct Attention;

fn main() {}
