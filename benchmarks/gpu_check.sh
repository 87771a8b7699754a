#!/usr/bin/env bash
# One short GPU session: the GPU tests, the suite with device="auto" landing on CUDA, the
# training speed and the few-shot table on CUDA. Logs go to $1 (default ./gpu-results).
# Run from the repository root on a machine with CUDA, torch, timm and scikit-learn.
set -uo pipefail
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$out/device.txt"
import torch, timm, sklearn
print(torch.cuda.get_device_name(0), "torch", torch.__version__, "timm", timm.__version__,
      "sklearn", sklearn.__version__)
PY
python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -5 | tee "$out/gpu_tests.txt"
python3 -m pytest -q -p no:cacheprovider -m "not slow" tests/test_dino.py tests/test_featurizer.py tests/test_augment.py tests/test_supervised.py 2>&1 | tail -15 | tee "$out/suite_on_cuda.txt"
{
  python3 benchmarks/speed.py --device cuda --epochs 4
  python3 benchmarks/speed.py --device cuda --epochs 4 --batch 256
  python3 benchmarks/speed.py --device cuda --epochs 3 --img 64 --patch 8 --batch 256
} 2>&1 | grep -v Warning | tee "$out/speed.txt"
python3 benchmarks/fewshot_digits.py 2>&1 | grep -v Warning | tee "$out/fewshot_cuda.txt"
# torchrun with NCCL, one process: DistributedDataParallel, SyncBatchNorm (XCiT) and the
# streamed DataLoader path on the GPU; the output must load with load_backbone.
python3 - "$out/archive" <<'PY'
import sys, pathlib
import numpy as np
from PIL import Image
root = pathlib.Path(sys.argv[1]); rng = np.random.default_rng(0)
for i in range(512):
    (root / f"{i % 4}").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / f"{i % 4}/{i}.png")
PY
{
  torchrun --standalone --nproc-per-node 1 -m sparsam pretrain "$out/archive" --out "$out/nccl-run" \
    --backbone xcit_small_12_p8_224 --backbone-kwargs '{"depth": 2}' --image-size 64 \
    --local-crop-size 32 --epochs 2 --batch-size 64 --in-memory no --num-workers 4 \
    --device cuda --quiet
  python3 -c "import sys, sparsam; m = sparsam.load_backbone(sys.argv[1]); print('nccl torchrun output loads:', type(m).__name__, m.num_features)" "$out/nccl-run"
} 2>&1 | grep -v Warning | tail -5 | tee "$out/torchrun_nccl.txt"
