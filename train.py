#!/usr/bin/env python
"""Fine-tune Stable Video Diffusion on a CSV of videos.

    python train.py --config configs/train/svd_finetune.yaml [key=value ...] [--resume]
    msrun --worker_num=8 --local_worker_num=8 --master_port=8118 --join=True \\
        train.py --config configs/train/svd_finetune.yaml

`key=value` items override the config (OmegaConf dotlist: train.max_steps=2000 data.csv=my.csv).
`--resume` continues from the newest checkpoint under train.output_dir (or `--resume DIR` from
a given checkpoints/step_XXXXXXX folder): weights, optimizer, loss scale, EMA, step and every
rank's data position, so the run ends where an uninterrupted one would.
Ctrl-C / SIGTERM stop after the current step with a checkpoint (exit code 130).
Exit codes: 0 done, 1 configuration/data/checkpoint error (one line on stderr), 130 interrupted.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML (see configs/train/)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from the newest checkpoint in train.output_dir, or from DIR")
    parser.add_argument("--device_target", default=None, choices=["CPU", "GPU", "Ascend"],
                        help="device (default: MindSpore's default for this installation)")
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from svd_ms.runtime.cluster import is_scheduler, run_scheduler
    if is_scheduler():
        return run_scheduler()
    args = parse_args(argv)
    bad = [item for item in args.overrides if "=" not in item]
    if bad:
        print(f"train.py: error: overrides must be key=value, got {bad[0]!r}", file=sys.stderr)
        return 1

    from svd_ms.errors import SVDError
    from svd_ms.runtime import Cluster, setup_device
    from svd_ms.training.config import load_train_config
    from svd_ms.training.trainer import TRAINING_MODE, Trainer

    try:
        cfg = load_train_config(args.config, args.overrides)
        cluster = Cluster()
        setup_device(args.device_target, mode=TRAINING_MODE, cluster=cluster)
        trainer = Trainer(cfg, cluster.init(), resume=args.resume)
        status = trainer.run()
    except SVDError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as exc:
        # Settings the trainer's modules reject themselves (an unknown lr schedule or loss type,
        # bf16 on CPU, a non-integer step count, an unwritable output folder): one line, not a
        # traceback, unless SVD_DEBUG asks for it.
        if os.environ.get("SVD_DEBUG", "") not in ("", "0"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        print(f"train.py: error: {type(exc).__name__}: {first} (set SVD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
    return 130 if status == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
