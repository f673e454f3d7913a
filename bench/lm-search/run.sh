#!/bin/sh
# Mixed-precision search of the CLI-default transformer-lm (docs/search.md "Language models").
# Usage: sh bench/lm-search/run.sh OUTDIR   (about 40 minutes on 2 shared cores; prints what docs/search.md "Language models" tabulates)
set -e
D=${1:-runs/lm-search}
L="nice -n 10 node bin/lowbit.js"
mkdir -p "$D"
[ -f "$D/fp32/checkpoint.safetensors" ] || $L train --model transformer-lm --quant fp32 --out "$D/fp32" --no-progress
# Budgets: the size of uniform W4 and W3 weights (473,600 searchable weights: 236.8 kB, 177.6 kB).
for B in 236.8KB:4 177.6KB:3; do
  S=${B%%:*}; W=${B##*:}
  $L search --model "$D/fp32" --budget size=$S --method ilp --wbits $W --out "$D/uniform-w$W" --no-progress
  $L search --model "$D/fp32" --budget size=$S --method ilp --wbits 2,3,4,8 --out "$D/ilp-w$W" --no-progress
  $L search --model "$D/fp32" --budget size=$S --method nsga2 --wbits 2,3,4,8 --out "$D/nsga2-w$W" --no-progress
  for P in uniform ilp nsga2; do
    for SEED in 0 1 2; do
      $L train --model transformer-lm --init "$D/fp32" --plan "$D/$P-w$W/plan.json" --epochs 1 --seed $SEED --out "$D/qat-$P-w$W-s$SEED" --no-progress
      $L eval "$D/qat-$P-w$W-s$SEED"
    done
  done
done
# Between uniform W2 and W3: 148 kB (2.5 bits per weight), ilp only, against uniform W2.
$L search --model "$D/fp32" --budget size=148KB --method ilp --wbits 2,3,4,8 --out "$D/ilp-w2.5" --no-progress
$L search --model "$D/fp32" --budget size=118.4KB --method ilp --wbits 2 --out "$D/uniform-w2" --no-progress
for P in ilp-w2.5 uniform-w2; do
  for SEED in 0 1 2; do
    $L train --model transformer-lm --init "$D/fp32" --plan "$D/$P/plan.json" --epochs 1 --seed $SEED --out "$D/qat-$P-s$SEED" --no-progress
    $L eval "$D/qat-$P-s$SEED"
  done
done
# The same fine-tune at a 10x lower learning rate (--lr 5e-4) for every plan above.
for P in uniform-w4 ilp-w4 nsga2-w4 uniform-w3 ilp-w3 nsga2-w3 uniform-w2 ilp-w2.5; do
  for SEED in 0 1 2; do
    $L train --model transformer-lm --init "$D/fp32" --plan "$D/$P/plan.json" --epochs 1 --lr 5e-4 --seed $SEED --out "$D/qatlr-$P-s$SEED" --no-progress
    $L eval "$D/qatlr-$P-s$SEED"
  done
done
