#!/usr/bin/env bash
# The project's checks and benchmarks on a CUDA machine, in stages, each writing its log to $OUT (default: .).
#   bash benchmarks/gpu_checks.sh STAGE [STAGE ...]
# smoke:  the fast path (data on device, CUDA graphs) for 2 epochs on 640 + 640 images, with a profile
# tests:  pytest -m cuda (train.py in every speed setting, resume, evaluate/predict/export on cuda) and the
#         kornia-versus-torchvision statistics on the GPU
# steps:  the training-step benchmark (ours vs timm's ghostnet_100), fp32 and bf16 + channels_last, and the
#         host-overhead benchmark on the GPU machine's CPU
# full:   the epoch-time benchmark at full Stanford size (8,144 + 8,041 generated images), every setting
# tuned:  the epoch-time benchmark at full size, the tuned settings: cudnn_benchmark, then max-autotune
# curve:  the learning curves of the default and the fast path over 3 seeds
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1
python3 - <<'EOF' 2>&1 | tee -a "$OUT/versions.txt"
import platform, torch, torchvision, pytorch_lightning, torchmetrics
try:
    import kornia
    k = kornia.__version__
except ImportError:
    k = "missing"
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision "
      f"{torchvision.__version__}, lightning {pytorch_lightning.__version__}, torchmetrics {torchmetrics.__version__}, "
      f"kornia {k}, GPU {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$OUT/versions.txt"
for stage in "$@"; do
  start=$SECONDS
  case $stage in
    smoke) python3 -m benchmarks.epoch_time --train 640 --test 640 --epochs 2 --settings 5,6 \
             --workers 8 --profile 6 --out "$OUT" --work /tmp/bench_small ;;
    tests) python3 -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -x
           python3 -m pytest tests/test_gpu_augmentation_statistics.py -q -p no:cacheprovider ;;
    steps) timeout 50 python3 -m benchmarks.train_step --device cuda --batch-size 64 --rounds 3 --steps 10 --warmup 5
           timeout 50 python3 -m benchmarks.train_step --device cuda --batch-size 64 --rounds 3 --steps 10 \
             --warmup 5 --bf16 --channels-last
           python3 -m benchmarks.host_overhead --rounds 3 ;;
    full)  timeout 380 python3 -m benchmarks.epoch_time --train 8144 --test 8041 --epochs 2 \
             --workers 16 --settings 6,5,1,4,3,2 --profile 6 --out "$OUT" --work /tmp/bench_full ;;
    tuned) timeout 560 python3 -m benchmarks.epoch_time --train 8144 --test 8041 --epochs 2 \
             --workers 16 --settings 7,8 --out "$OUT" --work /tmp/bench_full ;;
    curve) python3 -m benchmarks.learning_curve --classes 24 --per-class 40 --epochs 15 --seeds 3 --compile \
             --work /tmp/curve ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac > "$OUT/$stage.log" 2>&1
  echo "== $stage: exit $? after $((SECONDS - start)) s; last lines of $stage.log:"
  grep -v -e "it/s" -e "s/it" "$OUT/$stage.log" | tail -n 40
done
