"""Make a video through a running web page (`python -m svd_ms.app`) with gradio_client: the five
lines under "the script" are the whole of it; the rest reads the command line.

    python scripts/web_client.py assets/demo_landscape.png --url http://127.0.0.1:7860 --seed 42
"""
import argparse

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("image")
ap.add_argument("--url", default="http://127.0.0.1:7860")
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--frames", type=int, default=None, help="default: the served model's")
ap.add_argument("--steps", type=int, default=None, help="default: the served model's")
ap.add_argument("--width", type=int, default=None, help="default: the image's own size")
ap.add_argument("--height", type=int, default=None)
args = ap.parse_args()

# the script
import json  # noqa: E402

from gradio_client import Client, handle_file  # noqa: E402

client = Client(args.url, verbose=False)
video, sidecar = client.predict(handle_file(args.image), seed=args.seed, num_frames=args.frames, num_steps=args.steps,
                                width=args.width, height=args.height, api_name="/image_to_video")
sidecar = json.loads(sidecar)
print(video, sidecar["frames"], "frames, seed", sidecar["seed"], "sha256", sidecar["video_sha256"][:12])
