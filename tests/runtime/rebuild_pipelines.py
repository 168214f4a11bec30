"""Build, run and drop tiny graph-mode pipelines one after another in this one process, as a
notebook or a server switching settings would, and print the resident memory after each run and
after each drop as one JSON line. tests/runtime/test_pipeline_memory.py runs it in a process of
its own, so that nothing else the test suite built is counted.

    PYTHONPATH=tests python tests/runtime/rebuild_pipelines.py --count 5
"""
import argparse
import gc
import json
import os
import tempfile

import numpy as np


def smaller_config(path: str) -> str:
    """The tiny reference config with fewer layers (UNet: 2 levels of 1 res block; VAE: 1 res block
    per level), written to `path`: the same kinds of graph in a third of the compile time, which
    is what each pipeline here costs. Random weights (no checkpoint fits it)."""
    from omegaconf import OmegaConf

    from conftest import TINY_CONFIG
    cfg = OmegaConf.load(TINY_CONFIG)
    model = cfg.model.params
    unet = model.network_config.params
    unet.channel_mult, unet.num_res_blocks, unet.attention_resolutions = [1, 2], 1, [1]
    encoder = model.conditioner_config.params.emb_models[3].params.encoder_config.params.ddconfig
    for ddconfig in (model.first_stage_config.params.encoder_config.params,
                     model.first_stage_config.params.decoder_config.params, encoder):
        ddconfig.num_res_blocks = 1
    OmegaConf.save(cfg, path)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--model", choices=("tiny", "smaller"), default="tiny",
                        help="the tiny reference model, or smaller_config's (random weights)")
    parser.add_argument("--release", choices=("gc", "recycle", "pool", "trim"), default="gc",
                        help="after each drop: gc.collect() only; svd_ms's release_cached_memory() (gc, "
                             "MindSpore's recycle, malloc_trim); or, as experiments, gc.collect() with MindSpore's "
                             "memory-pool release alone, or with glibc's malloc_trim(0) alone")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_v", "3")

    from conftest import REFERENCE, TINY_CONFIG, TINY_WEIGHTS
    from svd_ms.pipeline import SVDInferPipeline
    from svd_ms.runtime import setup_device
    from svd_ms.runtime.memory import resident_bytes

    setup_device("CPU", mode=0)  # graph mode: compiled graphs are what dropped pipelines kept
    reference = np.load(os.path.join(REFERENCE, "tiny_svd.reference.npz"))
    image = reference["image"][:, :, :64, :96]  # small frames: compiling, not computing, is measured
    config, weights = TINY_CONFIG, TINY_WEIGHTS
    if args.model == "smaller":
        config, weights = smaller_config(os.path.join(tempfile.mkdtemp(), "smaller_svd.yaml")), None
    readings = {"start": resident_bytes(), "running": [], "dropped": []}
    for _ in range(args.count):
        pipe = SVDInferPipeline(config, weights, num_frames=3, num_steps=1, decode_chunk_size=3)
        pipe.generate(image, seed=0)
        readings["running"].append(resident_bytes())
        del pipe
        gc.collect()  # what a user who drops a pipeline does
        if args.release == "recycle":
            from svd_ms.runtime.memory import release_cached_memory
            release_cached_memory()
        elif args.release == "pool":
            from mindspore._c_expression import _ms_memory_recycle
            _ms_memory_recycle()
        elif args.release == "trim":
            from svd_ms.runtime.memory import trim_heap
            trim_heap()
        readings["dropped"].append(resident_bytes())
    print(json.dumps(readings), flush=True)


if __name__ == "__main__":
    main()
