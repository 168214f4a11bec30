#!/usr/bin/env bash
# Data-parallel image-to-video over many devices with MindSpore's msrun.
#
# Every worker runs the unchanged image_to_video.py; it notices msrun, pins its device,
# takes its share of the sorted image list and writes only its own videos. Rank 0 writes
# <output_dir>/job_summary.json at the end. The exit code is non-zero if any image failed.
#
# One 8-NPU server:
#   bash scripts/run_distributed.sh -- \
#       --SVD.config=configs/svd_xt.yaml --SVD.checkpoint=checkpoints/svd_xt.ckpt \
#       --image=data/images --output_dir=outputs/batch
#
# Two servers with 8 NPUs each (run on both; server 0's address is 192.168.1.10):
#   server 0: bash scripts/run_distributed.sh --worker_num=16 --local_worker_num=8 \
#                 --master_addr=192.168.1.10 --node_rank=0 -- <image_to_video.py flags>
#   server 1: bash scripts/run_distributed.sh --worker_num=16 --local_worker_num=8 \
#                 --master_addr=192.168.1.10 --node_rank=1 -- <image_to_video.py flags>
#   The image paths and --output_dir must be the same shared storage on every server.
#
# CPU, 2 workers on one machine (the msrun command line tests/msrun_helpers.py builds for the tests):
#   bash scripts/run_distributed.sh --worker_num=2 --local_worker_num=2 -- \
#       --device_target=CPU --mode=1 --SVD.config=... --image=... --output_dir=...
#
# Launcher options (everything after "--" goes to image_to_video.py):
#   --worker_num=N        workers over all servers             (default 8)
#   --local_worker_num=N  workers on this server               (default: worker_num)
#   --master_addr=ADDR    address of the server with node_rank 0 (default 127.0.0.1)
#   --master_port=PORT    its port, free on that server        (default 8118)
#   --node_rank=K         this server's index, 0 .. servers-1  (default 0)
#   --log_dir=DIR         msrun's per-worker logs              (default logs/msrun)
#   --cluster_time_out=S  seconds to wait for all workers to join (default 600)
# msrun starts "python image_to_video.py ..." on each worker: activate the environment first so
# that "python" and "msrun" are the ones with MindSpore (MSRUN overrides the launcher's path).
set -euo pipefail

worker_num=8
local_worker_num=""
master_addr=127.0.0.1
master_port=8118
node_rank=0
log_dir=logs/msrun
cluster_time_out=600

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --worker_num=*) worker_num="${1#*=}" ;;
        --local_worker_num=*) local_worker_num="${1#*=}" ;;
        --master_addr=*) master_addr="${1#*=}" ;;
        --master_port=*) master_port="${1#*=}" ;;
        --node_rank=*) node_rank="${1#*=}" ;;
        --log_dir=*) log_dir="${1#*=}" ;;
        --cluster_time_out=*) cluster_time_out="${1#*=}" ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) echo "run_distributed.sh: unknown option '$1' (image_to_video.py flags go after --)" >&2
           exit 2 ;;
    esac
    shift
done
local_worker_num="${local_worker_num:-$worker_num}"

for v in worker_num local_worker_num master_port node_rank cluster_time_out; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]]; then
        echo "run_distributed.sh: --$v must be a non-negative integer, got '${!v}'" >&2
        exit 2
    fi
done
if (( local_worker_num < 1 || local_worker_num > worker_num )); then
    echo "run_distributed.sh: need 1 <= --local_worker_num ($local_worker_num) <= --worker_num ($worker_num)" >&2
    exit 2
fi
if (( worker_num % local_worker_num != 0 )); then
    echo "run_distributed.sh: warning: --worker_num is not a multiple of --local_worker_num;" \
         "check --node_rank on every server" >&2
fi
if [[ $# -eq 0 ]]; then
    echo "run_distributed.sh: no image_to_video.py flags given after --" >&2
    exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$log_dir"
echo "msrun: $worker_num worker(s) in total, $local_worker_num here (node_rank $node_rank)," \
     "master $master_addr:$master_port, logs in $log_dir/"
exec "${MSRUN:-msrun}" \
    --worker_num="$worker_num" \
    --local_worker_num="$local_worker_num" \
    --master_addr="$master_addr" \
    --master_port="$master_port" \
    --node_rank="$node_rank" \
    --log_dir="$log_dir" \
    --cluster_time_out="$cluster_time_out" \
    --join=True \
    "$here/image_to_video.py" "$@"
