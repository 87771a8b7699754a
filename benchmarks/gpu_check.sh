#!/usr/bin/env bash
# One short GPU session (issue 19, part B), most important first, each step's output in
# OUT/<step>.txt: the card and its measured bf16 matmul peak; a torchrun run (NCCL,
# SyncBatchNorm, a small XCiT streamed from PNG files with workers) killed mid-epoch and
# resumed; the paper's training configuration side by side with lightly's loop; the GPU tests;
# transform against a bare forward. Sized to finish in about 5 minutes on an H200.
#
#   bash benchmarks/gpu_check.sh OUT [PEER_DIR]
#
# PEER_DIR (default .gpu) holds gpu_dino_speed.py and lightly_dino_ref.py from
# ../shared/bench and lightly's wheel (`pip download --no-deps lightly`): a GPU machine may
# reach no package registry. Run from the repository root with torch, timm and scikit-learn.
set -uo pipefail
out=${1:-gpu-results}
peer=${2:-.gpu}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
if compgen -G "$peer/lightly-*.whl" >/dev/null; then
  python3 -m pip install -q --no-deps --no-index --target /tmp/peer-site "$peer"/lightly-*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/peer-site
fi

step() {  # step NAME COMMAND...: run it, keep its output without warnings, time it
  local name=$1 started=$SECONDS
  shift
  echo "== $name: $*"
  "$@" 2>&1 | grep -v -i -E 'warning|warn\(' | tee "$out/$name.txt"
  echo "   ($((SECONDS - started)) s)"
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

step resume python3 benchmarks/resume_check.py --device cuda --out /tmp/resume-check --repeat

speed=(python3 "$peer/gpu_dino_speed.py")
step speed_xcit_sparsam "${speed[@]}" sparsam xcit_small_12_p8_224 --batch 64 --n 512 --epochs 3
step speed_xcit_lightly "${speed[@]}" lightly xcit_small_12_p8_224 --batch 64 --n 512 --epochs 3
step gpu_tests python3 -m pytest -q -p no:cacheprovider -m gpu tests
step embed_xcit python3 benchmarks/embed_speed.py --device cuda --backbone xcit_small_12_p8_224 \
  --backbone-kwargs '{}' --image-size 224 --source-size 256 --n 1024 --batch 256 --workers 14 \
  --repeats 1
if [ "${QUICK:-0}" = 1 ]; then exit 0; fi
step speed_vit_sparsam "${speed[@]}" sparsam vit_small_patch16_224 --batch 64 --n 1024 --epochs 3
step speed_vit_lightly "${speed[@]}" lightly vit_small_patch16_224 --batch 64 --n 1024 --epochs 3
