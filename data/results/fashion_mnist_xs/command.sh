#!/usr/bin/env bash
# SwiftFormer-XS on Fashion-MNIST, 2-core CPU (see ../train_fashion_mnist_xs.json).
# Crop + flip only, so the batches are augmented whole (BatchRandomResizedCrop) and loading costs ~nothing.
# NHWC (channels_last) and fused AdamW, the defaults.
python -m swiftlib.train --data fashion-mnist --model swiftformer_xs --recipe subset \
  --img-size 32 --epochs 5 --batch-size 64 --lr 3e-3 --lr-batch 64 --warmup-epochs 0.1 \
  --scale-min 1.0 --color-jitter 0 --crop-pct 1.0 --threads 2 --workers 0 --seed 0 --out runs/fm_xs_v4
