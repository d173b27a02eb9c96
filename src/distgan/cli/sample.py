"""distgan sample: draw images from a trained run's generator into an .npz file."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from distgan.cli.common import COMMANDS, Command, CommandError, non_negative_int, positive_int


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder made by distgan train")
    parser.add_argument("--n", type=positive_int, default=1000, help="number of images (default 1000)")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.npz", help="where to write the images")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the latent vectors (default 0)")
    parser.add_argument("--round", type=non_negative_int, default=None,
                        help="use the checkpoint of this round (default: the newest)")


def run(args: argparse.Namespace) -> int:
    from distgan.checkpoint import atomic_write_bytes
    from distgan.images import to_uint8
    from distgan.sampling import generate_labelled, load_generator

    if args.out.suffix != ".npz":
        raise CommandError(f"--out {args.out}: must end in .npz")
    generator, config, round_number = load_generator(args.run_dir, args.round)
    generated, labels = generate_labelled(generator, args.n, args.seed, config.model.latent_dim)
    images = to_uint8(generated).numpy()
    buffer = io.BytesIO()
    if labels is None:
        np.savez_compressed(buffer, images=images)
    else:
        np.savez_compressed(buffer, images=images, labels=labels.numpy())
    atomic_write_bytes(args.out, buffer.getvalue())
    print(f"wrote {args.out}: images uint8 {list(images.shape)}"
          + ("" if labels is None else f" and labels int64 [{len(labels)}]") + f" from round {round_number}")
    return 0


COMMANDS.register("sample", "write N generated images (uint8 [N, C, H, W]) to an .npz file")(Command(
    configure, run, "Draw images from a run's generator (newest checkpoint) into FILE.npz, key 'images' (and "
    "'labels', the label each image was generated for, when the run's G is label-conditional: strategy dp-merf)."))
