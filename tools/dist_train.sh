#!/usr/bin/env bash
# Distributed training through torchrun.
#   tools/dist_train.sh CONFIG NUM_PROCS [train.py args...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and MASTER_PORT on every node.
# On CPU the gloo backend is used (set in the config's env_cfg.dist_cfg or automatically).
set -euo pipefail
CONFIG=$1
NPROCS=$2
shift 2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NPROCS" \
    --master_addr="$MASTER_ADDR" --master_port="$MASTER_PORT" \
    "$HERE/train.py" "$CONFIG" --launcher pytorch "$@"
