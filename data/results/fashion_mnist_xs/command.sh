#!/usr/bin/env bash
# SwiftFormer-XS on Fashion-MNIST, 2-core CPU (see ../train_fashion_mnist_xs.json)
python -m swiftlib.train --data fashion-mnist --model swiftformer_xs --recipe subset \
  --img-size 32 --epochs 4 --batch-size 128 --lr 2e-3 --lr-batch 128 --warmup-epochs 0.3 \
  --scale-min 0.6 --color-jitter 0 --crop-pct 1.0 --threads 1 --workers 0 --seed 0 --out runs/fashion_mnist_xs

