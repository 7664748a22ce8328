#!/usr/bin/env bash
# The reference's full SP Cup 2022 sequence: 13 backbones, supervised then semi-supervised, for users with the
# SP Cup data (see PATHS.json) and GPUs. Usage: scripts/sp22_reference.sh [OUTPUT_ROOT]
# Each line is the reference's command with its backbone, batch size and epochs; batch sizes were tuned for
# 8 x V100 (scale the learning rate with them: lr_max is per sample).
set -euo pipefail
OUT=${1:-output}
T1=data/spcup_2022_eval_part1/spcup_2022_eval_part1
T2=data/spcup_2022_eval_part2/spcup_2022_eval_part2

train() {  # part model batch epochs stage [extra...]
  local part=$1 model=$2 batch=$3 epochs=$4 stage=$5; shift 5
  python train.py --cfg "configs/sp22-${part}.yaml" --output-dir "$OUT/$stage/$part" \
    --model-name "$model" --batch-size "$batch" --epochs "$epochs" --all-data 1 --resume "$@"
}

# 1. supervised
train part1 EfficientNetB0 64 11 supervised
train part1 ResNet50D 64 9 supervised
train part1 ResNetRS50 32 13 supervised
train part1 ResNest50 32 21 supervised
train part1 RegNetZD8 64 8 supervised
train part1 EfficientNetV2S 32 25 supervised --pretrain imagenet21k
train part2 ECA_NFNetL2 16 12 supervised
train part2 convnext_base_in22k 32 14 supervised
train part2 ResNetRS152 32 11 supervised
train part2 convnext_large_in22k 16 15 supervised
train part2 RegNetZD8 32 5 supervised
train part2 EfficientNetB0 64 13 supervised
train part2 EfficientNetV2M 32 15 supervised --pretrain imagenet21k

# 2. pseudo-labels from both supervised ensembles
python generate_pseudo.py --part1-model-dir "$OUT/supervised/part1" --part1-infer-path "$T1" \
  --part2-model-dir "$OUT/supervised/part2" --part2-infer-path "$T2" --output "$OUT/supervised/pseudo/pred.csv"
P=(--pseudo-csv "$OUT/supervised/pseudo/pred.csv")

# 3. semi-supervised
train part1 EfficientNetB0 64 15 semi-supervised "${P[@]}"
train part1 ResNet50D 64 18 semi-supervised "${P[@]}"
train part1 ResNetRS50 32 17 semi-supervised "${P[@]}"
train part1 ResNest50 32 16 semi-supervised "${P[@]}"
train part1 RegNetZD8 64 12 semi-supervised "${P[@]}"
train part1 EfficientNetV2S 64 7 semi-supervised --pretrain imagenet21k "${P[@]}"
train part2 ECA_NFNetL2 16 11 semi-supervised "${P[@]}"
train part2 convnext_base_in22k 16 6 semi-supervised "${P[@]}"
train part2 ResNetRS152 32 16 semi-supervised "${P[@]}"
train part2 convnext_large_in22k 16 10 semi-supervised "${P[@]}"
train part2 RegNetZD8 32 8 semi-supervised "${P[@]}"
train part2 EfficientNetB0 32 10 semi-supervised "${P[@]}"
train part2 EfficientNetV2M 32 25 semi-supervised --pretrain imagenet21k "${P[@]}"

# 4. predictions
python predict.py --model-dir "$OUT/semi-supervised/part1" --infer-path "$T1" --output "$OUT/result/pred_part1.csv"
python predict.py --model-dir "$OUT/semi-supervised/part2" --infer-path "$T2" --output "$OUT/result/pred_part2.csv"
