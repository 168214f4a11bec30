"""Chained clips (issue 15): clip k+1 starts from clip k's last frame; one video of N*T-(N-1)
frames; deterministic by seed, independent of the worker count under msrun; an interrupted job
resumes at the first unfinished clip and ends with the same video.

Tiny reference model, 3 frames of 64x64, 1 sampling step per clip, to fit CI on 2 loaded cores.
MindSpore's CPU kernels reduce in thread order: repeated runs agree to float rounding (seen up to
5e-5, tests/test_pipeline.py), so "the same video" is checked to the repeat-run bound 2e-4 on
floats and to one 8-bit level on written frames.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import msrun_helpers
from conftest import TINY_CONFIG, TINY_IMAGE, TINY_WEIGHTS
from svd_ms import jobs
from svd_ms.params import SVDParams
from svd_ms.pipeline import SVDInferPipeline, chain_condition, clip_seed

T, CLIPS, SEED = 3, 3, 11
SIZE = (64, 64)  # (height, width)
PARAMS = dict(num_frames=T, num_steps=1, decode_chunk_size=T, num_clips=CLIPS)
REPEAT = 2e-4  # repeat-run bound (see the module docstring)


@pytest.fixture(scope="module")
def params():
    return SVDParams(config=TINY_CONFIG, checkpoint=TINY_WEIGHTS, **PARAMS)


@pytest.fixture(scope="module")
def pipe(params):
    return SVDInferPipeline(params=params)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("chain_images")
    with Image.open(TINY_IMAGE) as im:
        src = im.convert("RGB")
    src.crop((0, 0, 64, 64)).save(d / "a.png")
    src.crop((160, 96, 224, 160)).save(d / "b.png")
    return d


@pytest.fixture(scope="module")
def chain(pipe, images):
    clips = []
    result = pipe.generate(str(images / "b.png"), seed=SEED + 1, clip_callback=clips.append)
    return result, clips


def test_three_clips_make_one_video_of_3t_minus_2_frames(chain):
    result, clips = chain
    assert result.video.shape == (CLIPS * T - (CLIPS - 1), 3) + SIZE
    assert result.frames.shape == result.video.shape and result.latents.shape == (CLIPS, T, 4, 8, 8)
    assert [c.index for c in clips] == [0, 1, 2]
    assert [c.seed for c in clips] == [clip_seed(SEED + 1, k) for k in range(CLIPS)] and clips[0].seed == SEED + 1
    assert len(set(c.seed for c in clips)) == CLIPS
    # The joined video is clip 0, then each later clip without its first frame.
    expected = np.concatenate([clips[0].frames] + [c.frames[1:] for c in clips[1:]])
    assert np.array_equal(result.frames, expected)
    assert len(result.timings["step_s"]) == CLIPS and len(result.timings["clips"]) == CLIPS


def test_each_clip_is_conditioned_on_the_previous_clips_last_frame(chain):
    result, clips = chain
    for k in (1, 2):
        last = clips[k - 1].frames[-1]
        # Float, clamped to the image range, not rounded to 8 bits.
        assert np.array_equal(clips[k].condition[0], np.clip(last, -1, 1))
        assert np.array_equal(clips[k].condition, chain_condition(clips[k - 1].frames))
        assert not np.array_equal(clips[k].condition, np.round(clips[k].condition * 127.5) / 127.5)
        # ... and it is the frame the joined video shows at the seam.
        seam = k * (T - 1)
        assert np.array_equal(result.video[seam], np.clip((last + 1) / 2, 0, 1))


def test_clip_0_is_the_single_clip_video_and_the_chain_is_deterministic(pipe, chain, images):
    result, _ = chain
    single = pipe.generate(str(images / "b.png"), seed=SEED + 1, num_clips=1)
    diff = np.abs(single.video - result.video[:T]).max()
    print(f"clip 0 vs single-clip generate: max_abs={diff:.2e} | bound {REPEAT:.0e}")
    assert diff <= REPEAT
    other = pipe.generate(str(images / "b.png"), seed=SEED + 2, num_clips=1)
    assert np.abs(other.video - result.video[:T]).max() > 1e-2  # the seed matters


def test_resume_from_finished_clips_via_the_api(pipe, chain, images):
    result, clips = chain
    made = []
    resumed = pipe.generate(str(images / "b.png"), seed=SEED + 1, finished_clips=clips[:2], clip_callback=made.append)
    diff = np.abs(resumed.video - result.video).max()
    print(f"chain resumed at clip 3 vs uninterrupted: max_abs={diff:.2e} | bound {REPEAT:.0e}")
    assert diff <= REPEAT and [c.index for c in made] == [2] and resumed.timings["clips_resumed"] == 2
    from svd_ms.errors import InputError
    with pytest.raises(InputError, match="seed"):
        pipe.generate(str(images / "b.png"), seed=SEED + 5, finished_clips=clips[:1])


def test_chain_refuses_what_it_cannot_do(pipe, images, monkeypatch):
    from svd_ms.errors import ConfigError, InputError, ParamError
    with pytest.raises(ParamError, match="num_clips"):
        SVDParams(config=TINY_CONFIG, num_clips=0)
    with pytest.raises(InputError, match="output_type"):
        pipe.generate(str(images / "a.png"), seed=1, output_type="latent")
    # A model without fps/motion conditioning (SV3D's conditioner has neither) cannot chain.
    conditioner = type(pipe.engine.conditioner)
    keys = list(pipe.engine.conditioner.input_keys)
    monkeypatch.setattr(conditioner, "input_keys",
                        property(lambda self: [k for k in keys if k not in ("fps_id", "motion_bucket_id")]))
    with pytest.raises(ConfigError, match="fps_id, motion_bucket_id"):
        pipe.generate(str(images / "a.png"), seed=1)


# ---- the batch job: interrupted after clip 1, resumed; the same video under msrun ---------------

def frames_of(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("frame_*.png"))]).astype(np.int16)


def run_job(params, pipe, images, out, seed, capsys):
    settings = jobs.JobSettings(images=[str(i) for i in images], output_dir=str(out), output_format="png", seed=seed,
                                progress=False)
    job = jobs.BatchJob(settings, params, lambda p: pipe if p == pipe.params else SVDInferPipeline(params=p))
    try:
        return job.run(), capsys.readouterr()
    except KeyboardInterrupt:
        return "interrupted", capsys.readouterr()


@pytest.fixture(scope="module")
def uninterrupted(params, pipe, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    job = jobs.BatchJob(jobs.JobSettings(images=[str(images / "b.png")], output_dir=str(out), output_format="png",
                                         seed=SEED + 1, progress=False), params, lambda p: pipe)
    assert job.run() == 0
    return out


def test_job_interrupted_after_clip_1_resumes_with_the_same_video(params, pipe, images, uninterrupted, tmp_path,
                                                                  capsys, monkeypatch, chain):
    out = tmp_path / "o"
    real_save = jobs.ClipStore.save

    def save_then_interrupt(store, clip):
        real_save(store, clip)
        if clip.index == 0:
            raise KeyboardInterrupt
    monkeypatch.setattr(jobs.ClipStore, "save", save_then_interrupt)
    rc, _ = run_job(params, pipe, [images / "b.png"], out, SEED + 1, capsys)
    assert rc == "interrupted"
    work = out / f".b_seed{SEED + 1}.clips"
    assert sorted(p.name for p in work.iterdir()) == ["clip0000.npz", "key.json"]
    assert not (out / f"b_seed{SEED + 1}").exists()

    saved = []
    monkeypatch.setattr(jobs.ClipStore, "save", lambda store, clip: (saved.append(clip.index), real_save(store, clip)))
    rc, captured = run_job(params, pipe, [images / "b.png"], out, SEED + 1, capsys)
    assert rc == 0, captured.err
    assert "resuming" in captured.out and "at clip 2/3" in captured.out
    assert saved == [1, 2]  # clip 1 was not made again
    assert not work.exists()  # removed once the video and its sidecar are complete
    name = f"b_seed{SEED + 1}"
    resumed, whole = frames_of(out / name), frames_of(uninterrupted / name)
    diff = np.abs(resumed - whole).max()
    print(f"job resumed after clip 1 vs uninterrupted job: max 8-bit diff={diff} | bound 1")
    assert resumed.shape == (CLIPS * T - 2,) + SIZE + (3,) and diff <= 1
    api = np.clip(np.rint(chain[0].video * 255), 0, 255).transpose(0, 2, 3, 1)
    assert np.abs(whole - api).max() <= 1  # the job makes the API's video
    side = json.loads((out / f"{name}.json").read_text())
    assert side["status"] == "done" and side["frames"] == CLIPS * T - 2 and side["clips"] == CLIPS
    assert side["settings"]["num_clips"] == CLIPS


def test_clips_made_with_other_settings_are_not_reused(params, pipe, images, tmp_path, capsys):
    out = tmp_path / "o"
    store = jobs.ClipStore(out / "b_seed12", {"settings": {"fps": 3}, "seed": 12})
    out.mkdir()
    store.save(type("C", (), dict(index=0, seed=12, condition=np.zeros((1, 3, 64, 64), np.float32),
                                  frames=np.zeros((T, 3, 64, 64), np.float32), latents=np.zeros(1)))())
    assert len(store.load()) == 1
    assert jobs.ClipStore(out / "b_seed12", {"settings": {"fps": 7}, "seed": 12}).load() == []
    assert not store.folder.exists()


def test_msrun_two_workers_make_the_same_chained_video(images, uninterrupted, tmp_path):
    out = tmp_path / "dist"
    args = [str(msrun_helpers.REPO / "image_to_video.py"), "--SVD.config", TINY_CONFIG, "--SVD.checkpoint",
            TINY_WEIGHTS, f"--SVD.num_frames={T}", "--SVD.num_steps=1", f"--SVD.decode_chunk_size={T}",
            f"--SVD.num_clips={CLIPS}", "--mode=1", "--device_target=CPU", "--progress=false", f"--seed={SEED}",
            "--output_format=png", "--output_dir", str(out), "--image", str(images)]
    (tmp_path / "logs").mkdir()
    rc, launcher, logs = msrun_helpers.run_msrun(args, tmp_path / "logs", 1800)
    assert rc == 0, (launcher[-2000:], {k: v[-2000:] for k, v in logs.items()})
    # b.png is the second image: seed SEED + 1, on rank 1.
    name = f"b_seed{SEED + 1}"
    side = json.loads((out / f"{name}.json").read_text())
    assert side["rank"] == 1 and side["world_size"] == 2 and side["frames"] == CLIPS * T - 2
    dist, whole = frames_of(out / name), frames_of(uninterrupted / name)
    diff = np.abs(dist - whole).max()
    print(f"msrun rank 1 vs single process: max 8-bit diff={diff} | bound 1")
    assert dist.shape == whole.shape and diff <= 1
    assert len(list((out / f"a_seed{SEED}").glob("frame_*.png"))) == CLIPS * T - 2
    assert not list(out.glob(".*.clips"))


def test_the_front_door_chains_through_the_typed_pipeline(pipe):
    """svd_ms.pipelines.chained: generate(num_clips>1) goes to pipe.chained_clips, and the next clip's
    condition is the last decoded frame as float, clamped to the image range."""
    from svd_ms.pipelines.chained import ChainedClipsPipeline
    from svd_ms.pipelines.chained import chain_condition as typed_condition

    assert isinstance(pipe.chained_clips, ChainedClipsPipeline)
    frames = np.stack([np.full((3, 2, 2), v, np.float32) for v in (0.3, -1.7, 1.4)])
    cond = typed_condition(frames)
    assert cond.shape == (1, 3, 2, 2) and cond.dtype == np.float32 and np.all(cond == 1.0)
