"""Render the deterministic policy of a saved model as a short animated GIF, headless.

    python benchmarks/make_gif.py docs/models/Hopper-v4.pt docs/Hopper-v4.gif
    python benchmarks/make_gif.py runs/<run>/meow_continuous_action.pt out.gif --seconds 6 --width 240

It plays one episode of the model's own task (from the file) with the prior's mean pushed through the
flow, as evaluation does, and keeps the first --seconds of it at about --fps frames per second (every
n-th simulator frame, played back in real time), scaled to --width pixels, so that the file stays a few
hundred KB. The camera is the task's own tracking camera, as for `--capture-video` of the training
script; on a machine without a display MuJoCo renders with EGL.
"""
import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import meow_continuous_action as meow  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model or checkpoint file of meow_continuous_action.py")
    parser.add_argument("out", help="the .gif to write")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the clip (default: %(default)s)")
    parser.add_argument("--fps", type=int, default=12, help="frames per second of the GIF (default: %(default)s)")
    parser.add_argument("--width", type=int, default=200, help="width in pixels (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the episode's start state (default: %(default)s)")
    args = parser.parse_args()
    if not args.out.endswith(".gif"):
        meow.fail("%s: the output must be a .gif" % args.out)
    if args.seconds <= 0 or args.fps < 1 or args.width < 16:
        meow.fail("--seconds must be > 0, --fps >= 1 and --width >= 16")
    try:
        policy, saved, _ = meow.load_policy(args.model)
        meow.check_env_id(saved.env_id)
        meow.check_rendering(saved.env_id)
    except meow.ConfigError as e:
        meow.fail(str(e))

    env = meow.make_env(saved.env_id, args.seed, render=True)()
    every = max(1, round(env.metadata["render_fps"] / args.fps))  # keep every n-th simulator frame
    fps = env.metadata["render_fps"] / every  # real time
    wanted = max(1, round(args.seconds * fps))
    frames, total, step = [], 0.0, 0
    obs, _ = env.reset(seed=args.seed)
    done = False
    while not done and len(frames) < wanted:
        if step % every == 0:
            frames.append(shrink(env.render(), args.width))
        with torch.no_grad():
            action, _ = policy.sample(torch.as_tensor(obs, dtype=torch.float32)[None], deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action[0].numpy())
        total += float(reward)
        done = terminated or truncated
        step += 1
    env.close()
    meow.write_video(args.out, frames, fps)
    print("%s: %d frames (%.1f s of %s, return %.1f over the clip's %d steps) -> %s, %.0f KB"
          % (args.model, len(frames), len(frames) / fps, saved.env_id, total, step, args.out, os.path.getsize(args.out) / 1024))


def shrink(frame, width):
    """Nearest-neighbour downscale to `width` pixels (keeps the aspect ratio)."""
    h, w = frame.shape[:2]
    if w <= width:
        return frame
    rows = (np.arange(int(h * width / w)) * h * 1.0 / int(h * width / w)).astype(int)
    cols = (np.arange(width) * w * 1.0 / width).astype(int)
    return frame[rows][:, cols]


if __name__ == "__main__":
    main()
