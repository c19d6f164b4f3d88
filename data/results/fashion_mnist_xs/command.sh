#!/usr/bin/env bash
# SwiftFormer-XS on Fashion-MNIST, 2-core CPU (see ../train_fashion_mnist_xs.json).
# Crop + flip only, so the batches are augmented whole (BatchRandomResizedCrop) and loading costs ~nothing.
# NHWC (channels_last) and fused AdamW, the defaults.
python -m swiftlib.train --data fashion-mnist --model swiftformer_xs --recipe subset \
  --img-size 32 --epochs 6 --batch-size 128 --lr 4e-3 --lr-batch 128 --warmup-epochs 0.2 \
  --scale-min 1.0 --color-jitter 0 --crop-pct 1.0 --threads 2 --workers 0 --seed 0 --out runs/fm_xs_v5
