"""Video data for fine-tuning: a WebVid-style CSV of clips, read with mindone's VideoReader.

Every random choice a sample needs (start frame, cond_aug, the conditioning-frame noise) comes
from a numpy Generator seeded by (seed, epoch, index). A sample is therefore the same whichever
rank reads it and whenever, which is what makes data-parallel runs equal to one process on the
concatenated batch, and `--resume` exact: the data position is just (epoch, offset).

`ShardStream` walks the dataset as an endless sequence of epochs, each a seeded permutation of
which this rank takes every world_size-th entry. Unreadable videos (missing, corrupt, too short)
are skipped with a warning and counted; if a whole epoch of this rank's shard is unreadable, it
raises `DataError`.
"""
import csv
import hashlib
import logging
import os
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from ..errors import DataError
from ..preparation import resize_cover_crop_frames

_logger = logging.getLogger("svd_ms.train")

DEFAULT_MOTION_BUCKET_ID = 127
DEFAULT_COND_AUG = {"p_mean": -3.0, "p_std": 0.5}


class BadVideo(Exception):
    """One video cannot be used; the reason is the message."""


def sample_rng(seed: int, epoch: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(epoch), int(index), int(stream)])


def read_csv(csv_path: str, path_column: str) -> List[Dict[str, str]]:
    if not os.path.isfile(csv_path):
        raise DataError(f"data CSV '{csv_path}' does not exist")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            if path_column not in columns:
                raise DataError(f"data CSV '{csv_path}' has no '{path_column}' column (columns: "
                                f"{', '.join(columns)}); set data.path_column")
            rows = [row for row in reader if (row.get(path_column) or "").strip()]
    except UnicodeDecodeError:
        raise DataError(f"data CSV '{csv_path}' is not UTF-8 text (a binary file?)") from None
    except csv.Error as exc:
        raise DataError(f"data CSV '{csv_path}' cannot be parsed ({exc})") from None
    if not rows:
        raise DataError(f"data CSV '{csv_path}' lists no videos")
    return rows


class VideoCSVDataset:
    """Clips of `num_frames` frames, `frame_stride` apart, resized and centre-cropped to
    height x width, from the videos a CSV lists.

    CSV columns: `path_column` (relative to `root`; required), `fps_column` (the file's frame
    rate; read from the file when the column is absent or empty) and `motion_bucket_column`
    (0-255; `default_motion_bucket_id`, 127 as in SVD's sampling, when absent or empty).

    A sample: frames (T, 3, H, W) float32 in [-1, 1]; cond_frames_without_noise = the first
    frame; cond_frames = first frame + cond_aug * N(0, 1); fps_id = round(fps / stride) - 1 (the
    rate of the sampled clip, as SVD's sampling uses fps_id = fps - 1); motion_bucket_id;
    cond_aug, log-normal(p_mean, p_std) per sample, or a fixed value.
    With `fixed_start`, each video always gives the same clip (needed to cache its latents).
    """

    output_columns = ["frames", "cond_frames_without_noise", "cond_frames", "fps_id", "motion_bucket_id",
                      "cond_aug"]

    def __init__(self, csv: str, root: str = "", num_frames: int = 14, frame_stride: int = 1, height: int = 576,
                 width: int = 1024, path_column: str = "path", fps_column: str = "fps",
                 motion_bucket_column: str = "motion_bucket_id",
                 default_motion_bucket_id: int = DEFAULT_MOTION_BUCKET_ID, cond_aug=None, seed: int = 0,
                 fixed_start: bool = False):
        if num_frames < 1 or frame_stride < 1:
            raise DataError(f"num_frames and frame_stride must be >= 1, got {num_frames} and {frame_stride}")
        if height % 64 or width % 64:
            raise DataError(f"height and width must be multiples of 64, got {height}x{width}")
        self.csv_path = csv
        self.root = root or ""
        self.rows = read_csv(csv, path_column)
        self.num_frames = int(num_frames)
        self.frame_stride = int(frame_stride)
        self.height, self.width = int(height), int(width)
        self.path_column, self.fps_column, self.motion_bucket_column = path_column, fps_column, motion_bucket_column
        self.default_motion_bucket_id = int(default_motion_bucket_id)
        self.cond_aug = DEFAULT_COND_AUG if cond_aug is None else cond_aug
        if not isinstance(self.cond_aug, (int, float)) and not {"p_mean", "p_std"} <= set(self.cond_aug):
            raise DataError(f"data.cond_aug must be a number or {{p_mean, p_std}}, got {self.cond_aug}")
        self.seed = int(seed)
        self.fixed_start = bool(fixed_start)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def span(self) -> int:
        """Frames a clip covers in the source video."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def path(self, index: int) -> str:
        """The video's file, which must lie under data.root: a CSV may not point elsewhere
        (`../..`, absolute paths, links out) unless data.root is `/`."""
        relative = self.rows[index][self.path_column].strip()
        root = os.path.realpath(self.root or ".")
        full = os.path.realpath(os.path.join(root, relative))
        if root != os.sep and os.path.commonpath([root, full]) != root:
            raise BadVideo(f"path {relative!r} lies outside data.root {self.root or '.'!r}")
        return full

    def describe(self, index: int) -> str:
        return self.rows[index][self.path_column].strip()

    def _number(self, index: int, column: str) -> Optional[float]:
        value = (self.rows[index].get(column) or "").strip()
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            raise BadVideo(f"column '{column}' is not a number ('{value}')") from None

    def draw_cond_aug(self, rng: np.random.Generator) -> float:
        if isinstance(self.cond_aug, (int, float)):
            return float(self.cond_aug)
        return float(np.exp(self.cond_aug["p_mean"] + self.cond_aug["p_std"] * rng.standard_normal()))

    def read_clip(self, index: int, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
        """(T, H, W, 3) uint8 frames and the file's fps. Raises BadVideo."""
        from mindone.data import VideoReader

        path = self.path(index)
        if not os.path.isfile(path):
            raise BadVideo("file not found")
        try:
            with VideoReader(path) as reader:
                total = len(reader)
                file_fps = float(reader.fps or 0.0)
                if total < self.span:
                    raise BadVideo(f"too short: {total} frames, a clip needs {self.span}")
                start = int(rng.integers(0, total - self.span + 1))
                frames = reader.fetch_frames(num=self.num_frames, start_pos=start, step=self.frame_stride)
        except BadVideo:
            raise
        except Exception as exc:  # cv2 / mindone raise IOError, ValueError, RuntimeError, cv2.error
            raise BadVideo(f"cannot be decoded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
                from None
        if frames.ndim != 4 or frames.shape[0] != self.num_frames or frames.shape[-1] != 3:
            raise BadVideo(f"decoded to an unexpected shape {frames.shape}")
        return frames, file_fps

    def __getitem__(self, key) -> Dict[str, np.ndarray]:
        """`key` is an index, or (epoch, index). Raises BadVideo."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        rng = sample_rng(self.seed, 0 if self.fixed_start else epoch, index)
        frames, file_fps = self.read_clip(index, rng)
        fps = self._number(index, self.fps_column) or file_fps
        if not fps or fps <= 0:
            raise BadVideo("no frame rate in the CSV or the file")
        if not 1 <= fps <= 240:
            raise BadVideo(f"frame rate {fps:g} is out of range (1 to 240)")
        motion = self._number(index, self.motion_bucket_column)
        motion = self.default_motion_bucket_id if motion is None else motion
        if not 0 <= motion <= 255:
            raise BadVideo(f"column '{self.motion_bucket_column}' is {motion:g}, out of range (0 to 255)")
        clip = resize_cover_crop_frames(frames, self.height, self.width)
        video = clip.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        # Per-epoch draws, also when the clip itself is fixed.
        rng = sample_rng(self.seed, epoch, index, stream=1)
        cond_aug = self.draw_cond_aug(rng)
        cond_noise = rng.standard_normal(video.shape[1:]).astype(np.float32)
        return {
            "frames": video,
            "cond_frames_without_noise": video[0],
            "cond_frames": video[0] + np.float32(cond_aug) * cond_noise,
            "fps_id": np.float32(max(round(fps / self.frame_stride) - 1, 0)),
            "motion_bucket_id": np.float32(motion),
            "cond_aug": np.float32(cond_aug),
        }

    def cache_key(self, index: int) -> str:
        text = "|".join(str(v) for v in (self.describe(index), self.num_frames, self.frame_stride, self.height,
                                          self.width, self.seed))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class ShardStream:
    """This rank's endless, resumable sequence of good samples.

    Epoch e visits permutation_e[rank::world_size] (permutation seeded by (seed, e); identity
    when not shuffling). `position` = (epoch, offset into this rank's part of the epoch).
    """

    def __init__(self, dataset: VideoCSVDataset, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, epoch: int = 0, offset: int = 0, log=None):
        if len(dataset) < world_size:
            raise DataError(f"the data lists {len(dataset)} videos, fewer than the {world_size} ranks")
        self.dataset = dataset
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.offset = int(epoch), int(offset)
        self.skipped = 0          # skip events (a bad video is skipped each time the stream reaches it)
        self.bad: Dict[int, str] = {}
        self.log = log or _logger.warning

    def epoch_indices(self, epoch: int) -> np.ndarray:
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(n) if self.shuffle else np.arange(n)
        return order[self.rank::self.world_size]

    @property
    def position(self) -> Dict[str, int]:
        return {"epoch": self.epoch, "offset": self.offset}

    def next(self) -> Tuple[Dict[str, np.ndarray], Tuple[int, int]]:
        """The next good sample and its (epoch, index)."""
        failures_in_row = 0
        while True:
            indices = self.epoch_indices(self.epoch)
            if self.offset >= len(indices):
                self.epoch, self.offset = self.epoch + 1, 0
                continue
            index = int(indices[self.offset])
            key = (self.epoch, index)
            self.offset += 1
            if index in self.bad:
                reason = self.bad[index]
            else:
                try:
                    return self.dataset[key], key
                except BadVideo as exc:
                    reason = str(exc)
                    self.bad[index] = reason
                    self.log(f"skipping video '{self.dataset.describe(index)}': {reason}")
            self.skipped += 1
            failures_in_row += 1
            if failures_in_row >= len(indices):
                raise DataError(
                    f"no usable video: all {len(indices)} videos of "
                    + (f"rank {self.rank}'s share of " if self.world_size > 1 else "")
                    + f"'{self.dataset.csv_path}' are missing, corrupt or shorter than {self.dataset.span} frames "
                    f"(e.g. '{self.dataset.describe(index)}': {reason})")

    def check_usable(self):
        """Read ahead from the current position until one video decodes, without consuming
        anything; raise DataError if none of this rank's share does. Bad videos met on the way
        are remembered (and warned about once)."""
        indices = self.epoch_indices(self.epoch)
        order = list(indices[self.offset:]) + list(indices[:self.offset])
        reason = ""
        for index in order:
            index = int(index)
            if index in self.bad:
                reason = self.bad[index]
                continue
            try:
                self.dataset[(self.epoch, index)]
                return
            except BadVideo as exc:
                reason = self.bad[index] = str(exc)
                self.log(f"skipping video '{self.dataset.describe(index)}': {reason}")
        raise DataError(
            f"no usable video: all {len(indices)} videos of "
            + (f"rank {self.rank}'s share of " if self.world_size > 1 else "")
            + f"'{self.dataset.csv_path}' are missing, corrupt or shorter than {self.dataset.span} frames "
            f"(e.g. '{self.dataset.describe(int(order[-1]))}': {reason})")

    def __iter__(self) -> Iterator:
        while True:
            yield self.next()


def collate(samples: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    return {key: np.stack([s[key] for s in samples]) for key in samples[0]}
