#!/bin/bash
# Ours against PyTorch on this machine, in one sitting, interleaved: each round runs every workload of
# ours and then PyTorch's, so drift in the machine's speed hits both sides alike. Usage, from the repo root:
#
#   bash benches/side_by_side.sh [ROUNDS] [OUT]          # defaults: 3 rounds, out/side_by_side
#
# Needs ~/torch-venv (../shared/reference/README.md says how to install it) and the twin in
# ../shared/reference/torch_twin. Writes OUT/round-N/*.txt|json and, at the end, OUT/kernels.md (the kernel
# table, from benches/compare_unet_kernels.py). Workloads:
#   step    training step of `small` at batch 32: 03_train_mnist (the mean over 60 steps) / the twin's M1
#   ddim16  DDIM 50 steps x 16 images: 04_sample / the twin's M2
#   ddim256 DDIM 50 steps x 256 images in one batch: 04_sample / benches/torch_ddim.py
#   kernels every convolution, group norm and attention of `small` at batch 32, forward and backward:
#           benches/unet_kernels.rs / benches/torch_unet_kernels.py
set -euo pipefail
rounds=${1:-3}
out=${2:-out/side_by_side}
python=${PYTHON:-$HOME/torch-venv/bin/python}
twin=../shared/reference/torch_twin
# PyTorch's best case: glibc keeps its freed buffers instead of returning them to the system every call.
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=17179869184
cargo build --release --example 03_train_mnist --example 04_sample
cargo bench --bench unet_kernels --no-run
mkdir -p "$out"
lscpu | grep 'Model name' > "$out/machine.txt"
for r in $(seq 1 "$rounds"); do
    d="$out/round-$r"
    mkdir -p "$d"
    echo "round $r of $rounds: $(date -u +%H:%M:%S)"
    target/release/examples/03_train_mnist --steps 60 --accumulate 1 --sample-every 0 --grid 4 --sampler-steps 5 \
        --checkpoint-every 0 --out "$d/03" > "$d/step.txt" 2>&1
    "$python" "$twin/bench.py" --threads 2 --only M1,M2 --json "$d/torch_m1m2.json" > "$d/torch_m1m2.txt"
    target/release/examples/04_sample --random-weights small --sampler ddim --steps 50 --out "$d/04" > "$d/ddim16.txt"
    target/release/examples/04_sample --random-weights small --sampler ddim --steps 50 --count 256 \
        --out "$d/04-256" > "$d/ddim256.txt"
    "$python" benches/torch_ddim.py --twin "$twin" --images 256 > "$d/torch_ddim256.txt"
    cargo bench --bench unet_kernels -- --warm-up-time 0.5 --measurement-time 1 --save-baseline "round-$r" \
        > "$d/kernels.txt" 2>&1
    "$python" benches/torch_unet_kernels.py target/unet_kernels.txt --json "$d/torch_kernels.json" > "$d/torch_kernels.txt"
done
baselines=$(seq -s, -f 'round-%g' 1 "$rounds")
torch=$(seq -s, -f "$out/round-%g/torch_kernels.json" 1 "$rounds")
python3 benches/compare_unet_kernels.py --list target/unet_kernels.txt --criterion target/criterion/unet_kernels \
    --baselines "$baselines" --torch "$torch" > "$out/kernels.md"
echo "done: $(date -u +%H:%M:%S); the per-round figures:"
grep -h "trained in" "$out"/round-*/step.txt
grep -h "train step batch 32\|DDIM 50 steps, 16" "$out"/round-*/torch_m1m2.txt
grep -h "images in" "$out"/round-*/ddim16.txt "$out"/round-*/ddim256.txt
grep -h "DDIM" "$out"/round-*/torch_ddim256.txt
