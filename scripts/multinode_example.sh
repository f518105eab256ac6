#!/usr/bin/env bash
# A worked multi-node run: 2 machines x 8 GPUs, one imgedit-ds process per GPU, launched by accelerate
# (torchrun underneath). Every rank takes a contiguous block of chunks, commits them to the SHARED output
# folder, and rank 0 assembles the dataset once every chunk is in. Rerun the same commands after a crash:
# committed chunks are reused.
#
# Requirements: the same imgedit-ds install and the same input path on every node, an output folder on a
# filesystem all nodes share (NFS, Lustre, a mounted bucket), and the model in each node's HF cache
# (or HF_TOKEN set so each can download it).
#
# On node 0 (its address is MAIN_IP):
#   NODE_RANK=0 MAIN_IP=10.0.0.1 bash scripts/multinode_example.sh
# On node 1:
#   NODE_RANK=1 MAIN_IP=10.0.0.1 bash scripts/multinode_example.sh
set -euo pipefail

NODES=${NODES:-2}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
NODE_RANK=${NODE_RANK:?set NODE_RANK (0 on the main node)}
MAIN_IP=${MAIN_IP:?set MAIN_IP to the main node address}
OUTPUT=${OUTPUT:-/shared/imgedit/kontext-run1}
INPUT=${INPUT:-/shared/data/prompts.jsonl}

accelerate launch \
  --multi_gpu \
  --num_machines "$NODES" \
  --num_processes $((NODES * GPUS_PER_NODE)) \
  --machine_rank "$NODE_RANK" \
  --main_process_ip "$MAIN_IP" \
  --main_process_port 29500 \
  --mixed_precision no --dynamo_backend no \
  -m imgedit_ds \
  data=dataflow_jsonl data.path="$INPUT" \
  backend=flux_kontext run.batch_size=4 run.chunk_size=64 \
  output.dir="$OUTPUT"
# run.num_proc stays 1: the launcher already starts one process per GPU (rank -> cuda:LOCAL_RANK).
