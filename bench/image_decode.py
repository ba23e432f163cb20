"""Decoding + preprocessing one uploaded JPEG: the full decode (the official path) against the service's
reduced-scale decode (``decode_image(reduce_to=2 x input)``), for common photo sizes.

    .venv/bin/python bench/image_decode.py

Photo-like synthetic JPEGs (gradients + noise, quality 90). Median of the timed calls, one thread; also
the largest and mean per-pixel difference of the 224 px model input, in 0..255 levels. Prints a table and
writes JSON; asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from bench.common import machine, print_table, save_json  # noqa: E402
from service.preprocessing.image import ImageSpec, decode_image, preprocess  # noqa: E402
from tests.images import photo_like  # noqa: E402

SIZES = [(640, 480), (1920, 1080), (4032, 3024)]  # web image, 1080p, 12 MP phone photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--out", type=Path, help="JSON path (default: bench/results/image_decode-<time>.json)"
    )
    args = parser.parse_args()
    spec = ImageSpec(args.input_size)
    rng = np.random.default_rng(0)
    rows = []
    for width, height in SIZES:
        buffer = io.BytesIO()
        photo_like(rng, width, height).save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()

        def run(reduce_to: int | None, data: bytes = data) -> np.ndarray:
            return preprocess([decode_image(data, reduce_to=reduce_to)], spec)[0]

        timings = {}
        for name, reduce_to in (("full", None), ("reduced", 2 * args.input_size)):
            run(reduce_to)
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                run(reduce_to)
                seconds.append(time.perf_counter() - started)
            timings[name] = statistics.median(seconds) * 1e3
        levels = np.abs(run(None) - run(2 * args.input_size)) * np.array(spec.std)[:, None, None] * 255
        rows.append(
            {
                "size": f"{width}x{height}",
                "jpeg_bytes": len(data),
                "full_ms": round(timings["full"], 2),
                "reduced_ms": round(timings["reduced"], 2),
                "speedup": round(timings["full"] / timings["reduced"], 2),
                "max_diff_levels": round(float(levels.max()), 2),
                "mean_diff_levels": round(float(levels.mean()), 3),
            }
        )
    print_table(
        rows,
        ["size", "jpeg_bytes", "full_ms", "reduced_ms", "speedup", "max_diff_levels", "mean_diff_levels"],
    )
    save_json("image_decode", {"input_size": args.input_size, "machine": machine(), "rows": rows}, args.out)


if __name__ == "__main__":
    main()
