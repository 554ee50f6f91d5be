#!/usr/bin/env bash
# Prepares a GPU run, here (the GPU machine has Python, PyTorch and a CUDA 13.0 driver but no Rust
# toolchain and no network): builds the release `tessera` binary, the GPU test binaries and the
# sim_diff driver, strips them into one folder (default target/gpu-bundle, ignored by git) under
# 40 MiB with a manifest of checksums, and prints the command to run on the GPU machine.
#
#   bash benches/gpu/prepare.sh [BUNDLE_DIR]
#
# Take BUNDLE_DIR along with the working tree; on the GPU machine, from the repository root, run
# `bash benches/gpu/first_contact.sh OUTDIR` (see the README's "Running on a GPU").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
bundle="${1:-target/gpu-bundle}"
messages="$(mktemp "${TMPDIR:-/tmp}/tessera-prepare.XXXXXX")"
trap 'rm -f "$messages"' EXIT

build() {
  cargo "$@" --release --locked --message-format=json-render-diagnostics >> "$messages"
}
echo "prepare: building the release binary, the sim_diff driver and the GPU test binaries" >&2
build build -p tessera --bin tessera
build build -p tessera-runtime --example sim_diff
build test --no-run -p tessera-runtime --test gpu_attention --test gpu_matmul --test gpu_amp --test gpu_watchdog
build test --no-run -p tessera --test sim_attention_variants

python3 benches/gpu/bundle.py --messages "$messages" --out "$bundle"

cat <<EOF

prepare: done. Take the folder $bundle along with the working tree; on the GPU machine, from the
repository root (a minute spare under a 10-minute command, archive and summary always written):

  bash benches/gpu/first_contact.sh OUTDIR

then, in a second command, the tuning run for the headline shapes:

  bash benches/gpu/first_contact.sh --tune OUTDIR

OUTDIR then holds first-contact.md (the summary) and first-contact.tar.gz (everything), and
first-contact-tune.md / first-contact-tune.tar.gz (with tuned/<gpu>.json to check in as
runtime/tuned/<gpu>.json).
EOF
