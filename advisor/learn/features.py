"""Features a latency model learns from: geometry, work, memory traffic, and channel alignment.

Alignment features (residues and divisibility of the channel counts, padding waste up to the
next tile) let a tree model see why 192 channels can run faster than 193.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from advisor.model.layers import ConvLayer

GEOMETRY = ["batch", "in_channels", "in_h", "in_w", "out_h", "out_w", "kernel_h", "kernel_w",
            "stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w", "groups", "channels"]
TILES = (4, 8, 16, 32, 64)
BASELINE_TILES = (1, 4, 8, 16, 32)  # channel tiles the baseline may pad to (1: no padding)
BLOCKINGS = (4, 6, 8)  # register blockings: how many tiles a kernel can process together
BYTES_PER_ELEMENT = 4  # float32


def layer_geometry(layer: ConvLayer) -> dict:
    """The geometry columns of one layer variant, as the results database stores them."""
    (out_h, out_w) = layer.output_hw()
    n, c, h, w = layer.input_shape
    return {"batch": n, "in_channels": c, "in_h": h, "in_w": w, "out_h": out_h, "out_w": out_w,
            "kernel_h": layer.kernel[0], "kernel_w": layer.kernel[1], "stride_h": layer.stride[0],
            "stride_w": layer.stride[1], "pad_h": layer.padding[0], "pad_w": layer.padding[1],
            "dilation_h": layer.dilation[0], "dilation_w": layer.dilation[1], "groups": layer.groups,
            "channels": layer.out_channels, "flops": layer.flops()}


def bytes_moved(frame):
    """Input, weights and output read or written once (frame: a DataFrame or a dict of arrays)."""
    f = frame
    inputs = f["batch"] * f["in_channels"] * f["in_h"] * f["in_w"]
    weights = f["channels"] * (f["in_channels"] // f["groups"]) * f["kernel_h"] * f["kernel_w"]
    outputs = f["batch"] * f["channels"] * f["out_h"] * f["out_w"]
    return (inputs + weights + outputs) * BYTES_PER_ELEMENT


def feature_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """One feature row per input row (the database's geometry columns, or layer_geometry dicts)."""
    missing = [c for c in GEOMETRY + ["flops"] if c not in rows.columns]
    if missing:
        raise ValueError(f"rows lack geometry columns {missing}")
    frame = rows[GEOMETRY + ["flops"]].astype("float64").reset_index(drop=True)
    # columns gathered in a dict and framed once: inserting ~150 columns one by one into a
    # DataFrame took most of an active sweep's time between measurements
    features = {name: frame[name].to_numpy() for name in GEOMETRY}
    moved = bytes_moved(frame).to_numpy()
    flops = frame.flops.to_numpy()
    features["log_flops"] = np.log(np.clip(flops, 1, None))
    features["log_bytes"] = np.log(moved)
    features["intensity"] = flops / moved
    features["out_pixels"] = features["out_h"] * features["out_w"] * features["batch"]
    features["in_per_group"] = features["in_channels"] / features["groups"]
    for name, counts in (("out", features["channels"]), ("in", features["in_channels"])):
        for tile in TILES:
            residue = counts % tile
            features[f"{name}_mod{tile}"] = residue
            features[f"{name}_div{tile}"] = (residue == 0).astype(float)
            # share of a padded tile's work wasted on channels that do not exist
            padded = np.ceil(counts / tile) * tile
            features[f"{name}_waste{tile}"] = (padded - counts) / padded
            features[f"{name}_tiles{tile}"] = np.ceil(counts / tile)
            # kernels block several tiles together; a prime number of tiles leaves only blocks of 1
            for limit in BLOCKINGS:
                features[f"{name}_tiles{tile}_div_le{limit}"] = largest_divisor(np.ceil(counts / tile), limit)
    return pd.DataFrame(features)


def largest_divisor(values: np.ndarray, limit: int) -> np.ndarray:
    """Largest divisor of each value that is at most `limit`."""
    values = np.asarray(values).astype(int)
    best = np.ones(len(values))
    for divisor in range(2, limit + 1):
        best = np.where(values % divisor == 0, divisor, best)
    return best


def baseline_design(rows: pd.DataFrame, tile: int = 1) -> np.ndarray:
    """Columns of the log-log baseline that the trees correct: 1, log FLOPs (with the output
    channels padded up to a multiple of `tile`, as a kernel that computes whole tiles does), log bytes."""
    # plain arrays, not pandas arithmetic: an active sweep calls this ~12 times a round
    column = {name: rows[name].to_numpy(dtype="float64") for name in GEOMETRY + ["flops"]}
    channels = column["channels"]
    padded = np.ceil(channels / tile) * tile / channels
    return np.column_stack([np.ones(len(channels)), np.log(np.clip(column["flops"] * padded, 1, None)),
                            np.log(bytes_moved(column))])
