#!/usr/bin/env bash
# One short GPU session (issue 19, part B), most important first, each step's output in
# OUT/<step>.txt as soon as it ends: the card and its measured bf16 matmul peak; the GPU tests
# (a CUDA training step must never make the CPU wait); the paper's training configuration
# (XCiT-S12/8, 2 x 224 + 5 x 96 crops, head 2048/256/4096, batch 64, bf16) eager and compiled,
# with FLOP utilisation and peak memory; a torchrun run (NCCL, SyncBatchNorm, a small XCiT
# streamed from PNG files with workers, compiled) killed mid-epoch and resumed; bf16 against
# fp32 on the digits table; transform against a bare forward;
# ViT-S/16 eager and compiled beside lightly's loop. About 8 minutes on an H200.
#
#   bash benchmarks/gpu_check.sh OUT [PEER_DIR]
#
# PEER_DIR (default .gpu) holds gpu_dino_speed.py from ../shared/bench and lightly's wheel
# (`pip download --no-deps lightly`): a GPU machine may reach no package registry. Run from
# the repository root with torch, timm and scikit-learn installed.
set -uo pipefail
out=${1:-gpu-results}
peer=${2:-.gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G "$peer/lightly-*.whl" >/dev/null; then
  python3 -m pip install -q --no-deps --no-index --target /tmp/peer-site "$peer"/lightly-*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/peer-site
fi

step() {  # step NAME COMMAND...: run it, keep its output, time it
  local name=$1 started=$SECONDS
  shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.txt"
  echo "   ($((SECONDS - started)) s)" | tee -a "$out/$name.txt"
}

step device python3 - <<'PY'
import time, torch, timm, sklearn
print(torch.cuda.get_device_name(0), "torch", torch.__version__, "timm", timm.__version__,
      "sklearn", sklearn.__version__, "cuda", torch.version.cuda)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ a
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(10):
    a @ a
torch.cuda.synchronize()
print(f"bf16 8192^3 matmul: {10 * 2 * 8192**3 / (time.perf_counter() - t) / 1e12:.0f} TFLOP/s")
PY
step gpu_tests python3 -m pytest -q -p no:cacheprovider -m gpu tests
paper=(--device cuda --patch 8 --img 224 --local-size 96 --local-crops 5 --head 2048 256 4096
       --data synthetic --batch 64 --epochs 3)
step speed_xcit python3 benchmarks/speed.py "${paper[@]}" --arch xcit_small_12_p8_224 --n 512
step resume python3 benchmarks/resume_check.py --device cuda --out /tmp/resume-check --images 512 \
  --checkpoint-every 5 --compile yes --repeat
tail -n 4 /tmp/resume-check/*.log >>"$out/resume.txt" 2>/dev/null
step variants python3 benchmarks/variants_on_digits.py --device cuda --epochs 20 fp32-eager bf16-eager
step embed_xcit python3 benchmarks/embed_speed.py --device cuda --backbone xcit_small_12_p8_224 \
  --backbone-kwargs '{}' --image-size 224 --source-size 256 --n 2048 --batch 256 --workers 14 \
  --repeats 2
step speed_vit python3 benchmarks/speed.py "${paper[@]}" --arch vit_small_patch16_224 --patch 16 \
  --n 512
step lightly_vit python3 "$peer/gpu_dino_speed.py" lightly vit_small_patch16_224 --batch 64 \
  --n 512 --epochs 3
