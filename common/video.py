"""Render a policy's episode to mp4 (MuJoCo offscreen: EGL or OSMesa, see common.gl; imageio-ffmpeg).

Shadows, reflections and multisample anti-aliasing are off by default: on a CPU renderer they cost
~10x (about 6 vs 65 frames/s at 480x480 here) for little visible difference.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import imageio.v2 as imageio
import mujoco
import numpy as np

from common.envs import gym_make
from common.gl import choose_gl_backend


def render_episode(policy: Callable[[np.ndarray], np.ndarray], env_id: str, path: str | os.PathLike, seed: int = 0,
                   max_steps: int = 1000, width: int = 480, height: int = 480, fps: int | None = None,
                   fast: bool = True, label: str | None = None) -> dict:
    """Runs one deterministic episode, writes it to `path` (.mp4), returns {'return', 'length', 'frames'}.

    `label`: text drawn in the top-left corner of every frame (e.g. dataset, budget, score). Without MUJOCO_GL
    set, renders with EGL where it works, else OSMesa (common.gl)."""
    choose_gl_backend()
    env = gym_make(env_id, render_mode="rgb_array", width=width, height=height)
    try:
        model = env.unwrapped.model
        if fast:
            model.vis.quality.offsamples = 0  # read when the GL context is made, i.e. at the first render
        obs, _ = env.reset(seed=seed)
        viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
        if fast:
            viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        data = env.unwrapped.data
        try:
            torso = model.body("torso").id
        except KeyError:
            torso = 1

        floor = _floor(model)

        def frame():
            # gymnasium's free camera stays put; follow the torso along x so the robot stays in view
            x = data.xpos[torso][0]
            viewer.cam.lookat[0] = x
            if floor is not None:  # keep the finite rendered floor under the robot (see _floor)
                geom, period = floor
                data.geom_xpos[geom][0] = round(x / period) * period
            image = env.render()
            return _draw_label(image, label) if label else image

        fps = fps or int(round(env.metadata.get("render_fps", 30)))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        total, length = 0.0, 0
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=7, macro_block_size=16) as writer:
            writer.append_data(frame())
            for _ in range(max_steps):
                action = np.asarray(policy(obs[None].astype(np.float32)))[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                length += 1
                writer.append_data(frame())
                if terminated or truncated:
                    break
        os.replace(tmp, path)
        return {"return": total, "length": length, "frames": length + 1}
    finally:
        env.close()


def _floor(model) -> tuple[int, float] | None:
    """(geom id, texture period in metres) of the model's textured floor plane, or None.

    A plane collides as an infinite plane but is drawn only size[0] metres each way: HalfCheetah (40 m) runs off
    it within ~150 frames, Hopper (20 m) near the end of a good episode. `render_episode` moves the drawn floor
    under the robot in whole texture periods, so the checkerboard looks fixed to the ground. It writes only
    data.geom_xpos, which MuJoCo recomputes from the model at the next step: the physics is untouched."""
    for geom in range(model.ngeom):
        if model.geom_type[geom] != mujoco.mjtGeom.mjGEOM_PLANE or model.geom_bodyid[geom] != 0:
            continue
        material = model.geom_matid[geom]
        repeat = float(model.mat_texrepeat[material][0]) if material >= 0 else 0.0
        if repeat <= 0 or model.mat_texuniform[material]:
            period = 1.0 if repeat <= 0 else 1.0 / repeat  # texuniform: texrepeat is per metre
        else:
            period = 2.0 * float(model.geom_size[geom][0]) / repeat
        return geom, period
    return None


def _draw_label(image: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = draw.multiline_textbbox((8, 8), text)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.multiline_text((8, 8), text, fill=(255, 255, 255))
    return np.asarray(picture)


def gif_preview(mp4: str | os.PathLike, gif: str | os.PathLike, width: int = 200, every: int = 4,
                colors: int = 32) -> int:
    """A small looping GIF of an mp4 (every `every`-th frame, `width` px wide, same speed), for places that
    show images but not videos (a README on GitHub). Written atomically; returns the frame count."""
    from PIL import Image

    reader = imageio.get_reader(str(mp4))
    try:
        fps = float(reader.get_meta_data().get("fps") or 30.0)
        frames = [Image.fromarray(f) for i, f in enumerate(reader) if i % every == 0]
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{mp4} has no frames")
    height = round(frames[0].height * width / frames[0].width)
    small = [f.resize((width, height), Image.LANCZOS).convert("P", palette=Image.ADAPTIVE, colors=colors)
             for f in frames]
    gif = Path(gif)
    tmp = gif.with_name(gif.name + ".tmp")
    small[0].save(tmp, format="GIF", save_all=True, append_images=small[1:], loop=0, optimize=True,
                  duration=max(20, round(1000 * every / fps)))  # browsers slow frames under 20 ms down to 100 ms
    os.replace(tmp, gif)
    return len(small)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Make a GIF preview of a rollout mp4: "
                                                 "python -m common.video in.mp4 out.gif")
    parser.add_argument("mp4")
    parser.add_argument("gif")
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--every", type=int, default=4, help="keep every n-th frame")
    args = parser.parse_args(argv)
    frames = gif_preview(args.mp4, args.gif, args.width, args.every)
    print(f"wrote {args.gif} ({frames} frames)")


if __name__ == "__main__":
    main()
